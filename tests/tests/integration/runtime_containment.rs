//! A misbehaving backend must never take the host down: each hostile test component fails its
//! call with a clear error within the deadline, and the next call on the same host succeeds.

use std::time::Duration;

use modcsi::proto::ProbeRequest;
use modcsi_tests::{ESCAPE, LOOP_FOREVER, MEMORY_BOMB, PANIC, TRIGGER, TestHost, requests};
use tonic::Code;

/// Starts `backend` with one instance slot, so a call that leaked its instance would block the
/// next one, sets off the misbehaviour, and checks the error and the host's recovery. That the
/// failure came at the deadline is in the error itself ("did not finish within"); no wall-clock
/// assertion here.
async fn misbehave_then_recover(backend: &str, expected: Code, message_parts: &[&str]) {
    let mut host = TestHost::start_with(backend, |c| {
        c.call_timeout = Duration::from_millis(1500);
        c.memory_limit_mib = 32;
        c.max_concurrent_calls = 1;
    })
    .await;
    let err = host
        .client
        .controller
        .create_volume(requests::create(TRIGGER))
        .await
        .unwrap_err();
    assert_eq!(err.code(), expected, "{}", err.message());
    for part in message_parts {
        assert!(
            err.message().contains(part),
            "{:?} lacks {part:?}",
            err.message()
        );
    }

    let volume = host
        .client
        .controller
        .create_volume(requests::create("well-behaved"))
        .await
        .unwrap();
    assert_eq!(
        volume.into_inner().volume.unwrap().volume_id,
        "hostile-well-behaved"
    );
    host.client.identity.probe(ProbeRequest {}).await.unwrap();
}

#[tokio::test]
async fn a_backend_that_loops_forever_is_stopped_at_its_deadline() {
    misbehave_then_recover(
        LOOP_FOREVER,
        Code::DeadlineExceeded,
        &[
            "backend loop-forever",
            "create-volume",
            "did not finish within 1.5s",
            TRIGGER,
        ],
    )
    .await;
}

#[tokio::test]
async fn a_backend_that_allocates_without_bound_hits_its_memory_cap() {
    misbehave_then_recover(
        MEMORY_BOMB,
        // INTERNAL, not RESOURCE_EXHAUSTED: the provisioner would reschedule on the latter.
        Code::Internal,
        &[
            "backend memory-bomb",
            "create-volume",
            "memory limit of 32 MiB",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_backend_that_panics_fails_the_call_with_its_message() {
    misbehave_then_recover(
        PANIC,
        Code::Internal,
        &[
            "backend panic",
            "create-volume",
            "trapped",
            "hostile backend panicked on purpose",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_short_grpc_deadline_bounds_the_backend_call() {
    let mut host = TestHost::start_with(LOOP_FOREVER, |c| {
        c.call_timeout = Duration::from_secs(60);
        c.max_concurrent_calls = 1;
    })
    .await;
    let mut request = tonic::Request::new(requests::create(TRIGGER));
    request.set_timeout(Duration::from_millis(300));
    let err = host
        .client
        .controller
        .create_volume(request)
        .await
        .unwrap_err();
    // The client gives up at the same instant (tonic reports that as Cancelled).
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    // With one slot and a 60 s host bound, this only succeeds if the host stopped the guest
    // at the caller's 300 ms deadline.
    let mut next = tonic::Request::new(requests::create("after"));
    next.set_timeout(Duration::from_secs(5));
    host.client.controller.create_volume(next).await.unwrap();
}

#[tokio::test]
async fn a_backend_gets_no_filesystem_and_no_network() {
    misbehave_then_recover(
        ESCAPE,
        Code::Internal,
        &["escape attempt: read=denied list=denied write=denied connect=denied"],
    )
    .await;
    assert!(!std::path::Path::new("/tmp/escaped-from-wasm").exists());
}
