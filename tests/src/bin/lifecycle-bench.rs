//! `just bench`: volume lifecycles (create → publish → unpublish → delete) through the CSI
//! socket with 1 and 4 concurrent clients, per-call latency percentiles, and what a backend
//! call costs inside the runtime. Prints figures; asserts nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use modcsi::runtime::{Backend, RuntimeOptions};
use modcsi_tests::{NODE_LOCAL_CACHE, TestHost, component, requests};

const RUN_FOR: Duration = Duration::from_secs(3);
const CALLS: [&str; 4] = [
    "CreateVolume",
    "NodePublishVolume",
    "NodeUnpublishVolume",
    "DeleteVolume",
];

#[derive(Default)]
struct Samples([Vec<Duration>; 4]);

async fn client_loop(host: &TestHost, client: usize, until: Instant) -> (u64, Samples) {
    let mut csi = host.client.clone();
    let mut samples = Samples::default();
    let mut done = 0;
    while Instant::now() < until {
        let target = host.target(&format!("c{client}-{done}"));
        let t = Instant::now();
        let volume = csi
            .controller
            .create_volume(requests::create(&format!("bench-{client}-{done}")))
            .await
            .expect("create")
            .into_inner()
            .volume
            .expect("volume");
        samples.0[0].push(t.elapsed());
        let t = Instant::now();
        csi.node
            .node_publish_volume(requests::publish(&volume, &target, false))
            .await
            .expect("publish");
        samples.0[1].push(t.elapsed());
        let t = Instant::now();
        csi.node
            .node_unpublish_volume(requests::unpublish(&volume.volume_id, &target))
            .await
            .expect("unpublish");
        samples.0[2].push(t.elapsed());
        let t = Instant::now();
        csi.controller
            .delete_volume(requests::delete(&volume.volume_id))
            .await
            .expect("delete");
        samples.0[3].push(t.elapsed());
        done += 1;
    }
    (done, samples)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

async fn lifecycles(host: &Arc<TestHost>, clients: usize) {
    let until = Instant::now() + RUN_FOR;
    let started = Instant::now();
    // One task per client, so clients run in parallel on both cores.
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let host = host.clone();
            tokio::spawn(async move { client_loop(&host, client, until).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("client task"));
    }
    let elapsed = started.elapsed();
    let total: u64 = results.iter().map(|(n, _)| n).sum();
    println!(
        "\n{clients} client(s): {total} lifecycles in {:.2} s = {:.0} lifecycles/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    for (i, call) in CALLS.iter().enumerate() {
        let mut all: Vec<Duration> = results
            .iter()
            .flat_map(|(_, s)| s.0[i].iter().copied())
            .collect();
        all.sort();
        println!(
            "  {call:<20} p50 {:>8}  p99 {:>8}",
            us(percentile(&all, 0.5)),
            us(percentile(&all, 0.99))
        );
    }
}

async fn backend_overhead() {
    let dir = tempfile::tempdir().unwrap();
    let options = RuntimeOptions {
        cache_dir: dir.path().join("cache"),
        memory_limit: 64 << 20,
        call_timeout: Duration::from_secs(10),
        max_concurrent_calls: 8,
        config: Default::default(),
        store: None,
    };
    let path = component(NODE_LOCAL_CACHE);
    let t = Instant::now();
    let _cold = Backend::load(&path, options.clone()).await.unwrap();
    let cold = t.elapsed();
    let t = Instant::now();
    let backend = Backend::load(&path, options).await.unwrap();
    let warm = t.elapsed();
    println!(
        "\nbackend load: {} compiling, {} from the precompiled cache ({:?})",
        us(cold),
        us(warm),
        backend.origin()
    );

    const N: u32 = 5000;
    let t = Instant::now();
    for _ in 0..N {
        backend.probe(None).await.unwrap();
    }
    let per_probe = t.elapsed() / N;
    let before = backend.timings();
    println!(
        "backend call (probe, a no-op in the component), {N} calls: {} per call end to end",
        us(per_probe)
    );
    println!(
        "  of which: instantiate {} + call into the component {} (mean over {} calls)",
        us(before.mean_instantiate),
        us(before.mean_call),
        before.calls
    );
}

/// Latency of one durable compare-and-swap write to the embedded state store.
fn store_writes() {
    use modcsi::state::{EmbeddedStore, StateStore};
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("state.redb")).unwrap();
    const N: usize = 2000;
    let mut version = None;
    let mut samples = Vec::with_capacity(N);
    for i in 0..N {
        let t = Instant::now();
        version = Some(
            store
                .put("bench", "key", format!("value {i}").as_bytes(), version)
                .unwrap(),
        );
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "
state store (redb, durable commit per write), {N} compare-and-swap writes: p50 {}  p99 {}",
        us(percentile(&samples, 0.5)),
        us(percentile(&samples, 0.99))
    );
}

#[tokio::main]
async fn main() {
    println!("modcsi lifecycle benchmark: node-local-cache, real bind mounts, {RUN_FOR:?} per run");
    let host = Arc::new(TestHost::start(NODE_LOCAL_CACHE).await);
    for clients in [1, 4] {
        lifecycles(&host, clients).await;
    }
    let t = host.driver.backend.timings();
    println!(
        "\nbackend calls during the runs: {}, mean instantiate {}, mean call {}",
        t.calls,
        us(t.mean_instantiate),
        us(t.mean_call)
    );
    drop(host);
    backend_overhead().await;
    store_writes();
}
