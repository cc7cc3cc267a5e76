//! The fake Emma API itself, through a real HTTPS client that trusts only the fake's test CA:
//! tokens, validation, the volume state machine, the loop devices behind attachments, faults.

use std::path::Path;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use modcsi_tests::fake_emma::{FakeEmma, FakeEmmaOptions};
use serde_json::{Value, json};

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// A client of the fake: pooled connections, the test CA as its only root.
struct Api {
    client: Client<Https, Full<Bytes>>,
    base: String,
    token: Option<String>,
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    json: Value,
}

impl Api {
    fn new(fake: &FakeEmma) -> Self {
        Self {
            client: fake.client(),
            base: fake.base_url(),
            token: None,
        }
    }

    /// Logs in with the fake's credentials.
    async fn login(fake: &FakeEmma) -> Self {
        let mut api = Self::new(fake);
        let answer = api
            .call(
                "POST",
                "/v1/issue-token",
                Some(json!({"clientId": fake.client_id(), "clientSecret": fake.client_secret()})),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{}", answer.json);
        api.token = Some(answer.json["accessToken"].as_str().unwrap().to_owned());
        api
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, hyper_util::client::legacy::Error> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("accept", "application/json");
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(b) => {
                request = request.header("content-type", "application/json");
                Full::new(Bytes::from(b.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let response = self.client.request(request.body(body).unwrap()).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {bytes:?}"))
        };
        Ok(Answer {
            status,
            headers,
            json,
        })
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let answer = self.call(method, path, body).await.unwrap();
        assert_eq!(answer.status, 200, "{method} {path}: {}", answer.json);
        answer.json
    }

    /// Polls a volume until `done` holds for it.
    async fn wait_volume(&self, id: u64, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let volume = self.ok("GET", &format!("/v1/volumes/{id}"), None).await;
            if done(&volume) {
                return volume;
            }
            assert!(Instant::now() < deadline, "volume {id} stuck: {volume}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn create_available(&self, gb: u64) -> u64 {
        let volume = self
            .ok(
                "POST",
                "/v1/volumes",
                Some(json!({"dataCenterId": "aws-eu-central-1", "volumeGb": gb, "volumeType": "ssd"})),
            )
            .await;
        let id = volume["id"].as_u64().unwrap();
        self.wait_volume(id, |v| v["status"] == "AVAILABLE").await;
        id
    }
}

fn fast() -> FakeEmmaOptions {
    FakeEmmaOptions {
        draft: Duration::from_millis(100),
        // Long enough that a request right after an attach still finds the VM busy.
        busy: Duration::from_millis(400),
        ..FakeEmmaOptions::default()
    }
}

/// The size of a loop device in bytes, from sysfs.
fn device_bytes(device: &str) -> u64 {
    let name = Path::new(device).file_name().unwrap().to_string_lossy();
    let sectors: u64 = std::fs::read_to_string(format!("/sys/class/block/{name}/size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    sectors * 512
}

/// Whether a loop device still has a backing file.
fn device_attached(device: &str) -> bool {
    let name = Path::new(device).file_name().unwrap().to_string_lossy();
    Path::new(&format!("/sys/class/block/{name}/loop/backing_file")).exists()
}

#[tokio::test]
async fn tokens_are_issued_refreshed_and_expire() {
    let fake = FakeEmma::start(FakeEmmaOptions {
        access_ttl: Duration::from_secs(1),
        ..fast()
    })
    .await;
    let mut api = Api::new(&fake);

    let wrong = api
        .call(
            "POST",
            "/v1/issue-token",
            Some(json!({"clientId": fake.client_id(), "clientSecret": "nope"})),
        )
        .await
        .unwrap();
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.json["code"], "BAD_REQUEST");
    let anonymous = api.call("GET", "/v1/volumes", None).await.unwrap();
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json["code"], "UNAUTHORIZED");
    assert!(anonymous.json["message"].is_string());

    let token = api
        .ok(
            "POST",
            "/v1/issue-token",
            Some(json!({"clientId": fake.client_id(), "clientSecret": fake.client_secret()})),
        )
        .await;
    assert_eq!(token["tokenType"], "Bearer");
    assert_eq!(token["expiresIn"], 1);
    assert_eq!(token["refreshExpiresIn"], 1800);
    api.token = Some(token["accessToken"].as_str().unwrap().to_owned());
    let volumes = api.ok("GET", "/v1/volumes", None).await;
    assert!(volumes.is_array(), "a bare array: {volumes}");

    // The access token runs out by itself...
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = api.call("GET", "/v1/volumes", None).await.unwrap();
    assert_eq!(expired.status, 401);
    assert_eq!(expired.json["code"], "UNAUTHORIZED");

    // ...and the refresh token gets a new one.
    let refresh = json!({"refreshToken": token["refreshToken"]});
    let renewed = api
        .ok("POST", "/v1/refresh-token", Some(refresh.clone()))
        .await;
    api.token = Some(renewed["accessToken"].as_str().unwrap().to_owned());
    api.ok("GET", "/v1/data-centers", None).await;

    fake.expire_access_tokens();
    assert_eq!(api.call("GET", "/v1/vms", None).await.unwrap().status, 401);
    fake.expire_refresh_tokens();
    let stale = api
        .call("POST", "/v1/refresh-token", Some(refresh))
        .await
        .unwrap();
    assert_eq!(stale.status, 400);
    assert_eq!(stale.json["code"], "BAD_REQUEST");

    // One pooled connection carried all of it.
    assert_eq!(fake.connections(), 1);
    assert_eq!(fake.count("POST", "/v1/refresh-token"), 2);
}

#[tokio::test]
async fn catalog_and_volume_configs_follow_the_spec() {
    let fake = FakeEmma::start(fast()).await;
    let api = Api::login(&fake).await;

    let dcs = api.ok("GET", "/v1/data-centers", None).await;
    assert_eq!(dcs.as_array().unwrap().len(), 2);
    let dc = api
        .ok("GET", "/v1/data-centers/aws-eu-central-1", None)
        .await;
    assert_eq!(dc["providerName"], "AWS");
    assert_eq!(dc["locationName"], "Frankfurt");
    let missing = api
        .call("GET", "/v1/data-centers/nowhere-1", None)
        .await
        .unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json["code"], "NOT_FOUND");

    let no_bootable = api.call("GET", "/v1/volume-configs", None).await.unwrap();
    assert_eq!(no_bootable.status, 400);
    assert_eq!(no_bootable.json["code"], "BAD_REQUEST");

    let page = api
        .ok(
            "GET",
            "/v1/volume-configs?isBootable=false&dataCenterId=aws-eu-central-1&volumeType=ssd",
            None,
        )
        .await;
    assert_eq!(page["totalElements"], 8);
    let sizes: Vec<u64> = page["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["volumeGb"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [1, 2, 4, 8, 16, 32, 64, 128]);
    assert_eq!(page["content"][0]["cost"]["currency"], "EUR");

    let last = api
        .ok(
            "GET",
            "/v1/volume-configs?isBootable=false&dataCenterId=aws-eu-central-1&volumeType=ssd&volumeGbMin=4&size=2&page=2",
            None,
        )
        .await;
    assert_eq!(last["totalElements"], 6);
    assert_eq!(last["totalPages"], 3);
    assert_eq!(last["number"], 2);
    assert_eq!(last["numberOfElements"], 2);
    assert_eq!(last["last"], true);
    assert_eq!(last["first"], false);
    assert_eq!(last["content"][1]["volumeGb"], 128);
    assert_eq!(last["pageable"]["offset"], 4);

    let vm = api.ok("GET", "/v1/vms/101", None).await;
    assert_eq!(vm["name"], "node-a");
    assert_eq!(vm["networks"][0]["ip"], "10.0.0.11");
    assert_eq!(vm["disks"][0]["isBootable"], true);
}

#[tokio::test]
async fn a_volume_is_draft_then_available_and_deleted() {
    let fake = FakeEmma::start(fast()).await;
    let api = Api::login(&fake).await;

    let odd = api
        .call(
            "POST",
            "/v1/volumes",
            Some(json!({"dataCenterId": "aws-eu-central-1", "volumeGb": 3, "volumeType": "ssd"})),
        )
        .await
        .unwrap();
    assert_eq!(odd.status, 422);
    assert_eq!(odd.json["code"], "UNPROCESSABLE_ENTITY");
    let nowhere = api
        .call(
            "POST",
            "/v1/volumes",
            Some(json!({"dataCenterId": "nowhere-1", "volumeGb": 1, "volumeType": "ssd"})),
        )
        .await
        .unwrap();
    assert_eq!(nowhere.status, 422);

    let volume = api
        .ok(
            "POST",
            "/v1/volumes",
            Some(json!({"dataCenterId": "aws-eu-central-1", "volumeGb": 2, "volumeType": "hdd"})),
        )
        .await;
    assert_eq!(volume["status"], "DRAFT");
    assert_eq!(volume["sizeGb"], 2);
    assert_eq!(volume["type"], "hdd");
    assert_eq!(volume["isSystem"], false);
    assert_eq!(volume["dataCenter"]["id"], "aws-eu-central-1");
    assert!(volume.get("attachedToId").is_none());
    let name = volume["name"].as_str().unwrap();
    assert!(name.starts_with("volume-") && name.len() == 13, "{name}");
    let id = volume["id"].as_u64().unwrap();
    let file = fake.state_dir().join(format!("volume-{id}.img"));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 2 << 30);

    api.wait_volume(id, |v| v["status"] == "AVAILABLE").await;
    let deleted = api.ok("DELETE", &format!("/v1/volumes/{id}"), None).await;
    assert_eq!(deleted["status"], "DELETED");
    let gone = api
        .call("GET", &format!("/v1/volumes/{id}"), None)
        .await
        .unwrap();
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json["code"], "NOT_FOUND");
    assert!(!file.exists());
    assert!(fake.data_volumes().is_empty());
    assert_eq!(fake.count("POST", "/v1/volumes"), 3);
}

#[tokio::test]
async fn attach_shows_a_loop_device_and_detach_takes_it_away() {
    let fake = FakeEmma::start(fast()).await;
    let api = Api::login(&fake).await;
    let id = api.create_available(1).await;
    let link = fake.by_id().join(format!("virtio-{id}"));
    let attach = json!({"action": "attach", "volumeId": id});

    let vm = api
        .ok("POST", "/v1/vms/101/actions", Some(attach.clone()))
        .await;
    assert_eq!(vm["id"], 101);
    assert_eq!(vm["status"], "BUSY");
    let again = api
        .call("POST", "/v1/vms/101/actions", Some(attach.clone()))
        .await
        .unwrap();
    assert_eq!(again.status, 409);
    assert_eq!(again.json["code"], "CONFLICT");

    let active = api.wait_volume(id, |v| v["status"] == "ACTIVE").await;
    assert_eq!(active["attachedToId"], 101);
    let device = std::fs::read_link(&link).unwrap();
    let device = device.to_str().unwrap().to_owned();
    assert_eq!(fake.device(id).as_deref(), Some(device.as_str()));
    assert!(device.starts_with("/dev/loop"), "{device}");
    assert_eq!(device_bytes(&device), 1 << 30);
    let vm = api.ok("GET", "/v1/vms/101", None).await;
    assert!(
        vm["disks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == id),
        "{vm}"
    );
    let elsewhere = api
        .call("POST", "/v1/vms/102/actions", Some(attach))
        .await
        .unwrap();
    assert_eq!(elsewhere.status, 409);
    let busy_delete = api
        .call("DELETE", &format!("/v1/volumes/{id}"), None)
        .await
        .unwrap();
    assert_eq!(busy_delete.status, 409);

    // Growing an attached volume: BUSY, then ACTIVE with the loop device at the new size.
    let shrink = api
        .call(
            "POST",
            &format!("/v1/volumes/{id}/actions"),
            Some(json!({"action": "edit", "volumeGb": 1})),
        )
        .await
        .unwrap();
    assert_eq!(shrink.status, 400);
    let edit = api
        .ok(
            "POST",
            &format!("/v1/volumes/{id}/actions"),
            Some(json!({"action": "edit", "volumeGb": 2})),
        )
        .await;
    assert_eq!(edit["status"], "BUSY");
    api.wait_volume(id, |v| v["status"] == "ACTIVE" && v["sizeGb"] == 2)
        .await;
    assert_eq!(device_bytes(&device), 2 << 30);

    api.ok(
        "POST",
        "/v1/vms/101/actions",
        Some(json!({"action": "detach", "volumeId": id})),
    )
    .await;
    let available = api.wait_volume(id, |v| v["status"] == "AVAILABLE").await;
    assert!(available.get("attachedToId").is_none(), "{available}");
    assert!(!link.exists() && std::fs::symlink_metadata(&link).is_err());
    assert!(!device_attached(&device));
    assert_eq!(fake.device(id), None);

    // Dropping the fake leaves nothing attached.
    api.ok(
        "POST",
        "/v1/vms/101/actions",
        Some(json!({"action": "attach", "volumeId": id})),
    )
    .await;
    api.wait_volume(id, |v| v["status"] == "ACTIVE").await;
    let device = fake.device(id).unwrap();
    assert!(device_attached(&device));
    drop(fake);
    assert!(!device_attached(&device));
}

#[tokio::test]
async fn faults_throttle_fail_conflict_drop_and_redirect() {
    let fake = FakeEmma::start(fast()).await;
    let api = Api::login(&fake).await;

    fake.faults().throttle(1, 7);
    let throttled = api.call("GET", "/v1/volumes", None).await.unwrap();
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.headers["retry-after"], "7");
    assert_eq!(throttled.json["code"], "TOO_MANY_REQUESTS");
    api.ok("GET", "/v1/volumes", None).await;

    fake.faults().fail(1);
    let failed = api.call("GET", "/v1/vms", None).await.unwrap();
    assert_eq!(failed.status, 500);
    assert_eq!(failed.json["code"], "INTERNAL_SERVER_ERROR");

    // A busy-VM fault waits for a VM action; other requests pass.
    let id = api.create_available(1).await;
    fake.faults().busy_vm(1);
    api.ok("GET", "/v1/vms/101", None).await;
    let attach = json!({"action": "attach", "volumeId": id});
    let busy = api
        .call("POST", "/v1/vms/101/actions", Some(attach.clone()))
        .await
        .unwrap();
    assert_eq!(busy.status, 409);
    assert_eq!(fake.faults().pending(), 0);
    api.ok("POST", "/v1/vms/101/actions", Some(attach)).await;

    // Scoped: only creates lose their answer, after the volume was made.
    fake.faults()
        .matching("POST", "/v1/volumes")
        .lose_responses(1);
    api.ok("GET", "/v1/volumes", None).await;
    let create = json!({"dataCenterId": "aws-eu-central-1", "volumeGb": 1, "volumeType": "ssd"});
    let lost = api.call("POST", "/v1/volumes", Some(create.clone())).await;
    assert!(lost.is_err(), "no answer");
    assert_eq!(fake.data_volumes().len(), 2, "the create was carried out");
    let record = fake.requests().pop().unwrap();
    assert_eq!(
        (record.method.as_str(), record.api_path()),
        ("POST", "/v1/volumes")
    );
    assert_eq!(record.status, None);
    assert_eq!(record.json().unwrap()["volumeGb"], 1);

    fake.faults().drop_connections(1);
    assert!(api.call("POST", "/v1/volumes", Some(create)).await.is_err());
    assert_eq!(fake.data_volumes().len(), 2, "the dropped create was not");

    fake.redirect(
        "/v1/data-centers",
        "https://elsewhere.example/v1/data-centers",
    );
    let redirected = api.call("GET", "/v1/data-centers", None).await.unwrap();
    assert_eq!(redirected.status, 307);
    assert_eq!(
        redirected.headers["location"],
        "https://elsewhere.example/v1/data-centers"
    );
    fake.clear_redirects();

    fake.faults().delay(Duration::from_millis(300));
    let started = Instant::now();
    api.ok("GET", "/v1/data-centers", None).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    fake.faults().clear();
}
