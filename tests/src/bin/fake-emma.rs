//! The fake Emma cloud API (`modcsi_tests::fake_emma`) as a program, for trying an Emma backend
//! by hand (`just fake-emma`). Prints the base URL, the CA file and the credentials, and serves
//! until interrupted (SIGINT or SIGTERM), then removes every by-id link and loop device it made.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use modcsi_tests::fake_emma::{FakeEmma, FakeEmmaOptions};

#[derive(Parser)]
#[command(about = "A fake of the public Emma cloud API over HTTPS, with loop devices for disks")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Directory for the volumes' sparse files, the CA (`ca.pem`) and the client secret.
    #[arg(long, default_value = "/tmp/fake-emma")]
    state: PathBuf,
    /// Where `virtio-<volume id>` links to attached volumes appear (default: STATE/by-id).
    #[arg(long)]
    by_id: Option<PathBuf>,
    /// How long a new volume stays DRAFT, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    draft_ms: u64,
    /// How long an attach, detach or resize keeps a volume BUSY, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    busy_ms: u64,
    #[arg(long, default_value = "modcsi-test-client")]
    client_id: String,
    #[arg(long, default_value = "modcsi-test-secret")]
    client_secret: String,
    /// Another DNS name or IP address for the server certificate (repeatable), e.g. the node's IP
    /// when a cluster reaches the fake.
    #[arg(long = "san")]
    extra_names: Vec<String>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let options = FakeEmmaOptions {
        client_id: args.client_id,
        client_secret: args.client_secret,
        draft: Duration::from_millis(args.draft_ms),
        busy: Duration::from_millis(args.busy_ms),
        by_id: args.by_id,
        state: Some(args.state.clone()),
        extra_names: args.extra_names,
        listen: args.listen,
        ..FakeEmmaOptions::default()
    };
    let vms = options.vms.clone();
    let fake = FakeEmma::start(options).await;
    let secret_file = args.state.join("client-secret");
    std::fs::write(&secret_file, fake.client_secret()).expect("write the client secret");
    println!("fake Emma API: {}", fake.base_url());
    println!("CA:            {}", fake.ca_file().display());
    println!(
        "credentials:   clientId {:?}, clientSecret {:?} (also in {})",
        fake.client_id(),
        fake.client_secret(),
        secret_file.display()
    );
    println!(
        "disks:         {}/volume-<id>.img",
        fake.state_dir().display()
    );
    println!("attached:      {}/virtio-<id>", fake.by_id().display());
    for vm in &vms {
        println!(
            "VM:            {} {:?} in {} ({})",
            vm.id, vm.name, vm.data_center_id, vm.ip
        );
    }
    println!();
    println!("Point the host at it with this in --backend-config:");
    println!();
    println!("[http.targets.emma]");
    println!("base-url = {:?}", fake.base_url());
    println!("ca-file = {:?}", fake.ca_file().display().to_string());
    println!("[http.targets.emma.secrets]");
    println!(
        "client-secret = {{ secret-file = {:?} }}",
        secret_file.display().to_string()
    );
    println!();
    println!(
        "and the node's by-id directory at {}",
        fake.by_id().display()
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(fake);
    eprintln!("fake-emma: stopped; loop devices detached");
}
