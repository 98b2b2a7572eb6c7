//! Object-store sources for real: an S3-compatible server (s3s-fs, which checks signatures)
//! and a WebDAV server (wsgidav) on loopback, started by the tests. Results must equal the
//! same files converted from a local directory.

mod support;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(port: u16, server: &mut Server) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("server exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("server on port {port} did not start");
}

fn find_binary(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: scripts/setup installs it"))
}

fn checksum_of(entry: &str) -> (String, u64) {
    let r = json(&kiln(&["stream", entry, "--batch-size", "16", "--json"]));
    (
        r["checksum"].as_str().unwrap().to_owned(),
        r["rows"].as_u64().unwrap(),
    )
}

fn local_reference(data: &Path, spec: &str, cache: &Path) -> (String, u64) {
    let r = json(&kiln(&[
        "convert",
        data.to_str().unwrap(),
        "--spec",
        spec,
        "--cache",
        cache.to_str().unwrap(),
        "--include",
        "*.png",
        "--json",
    ]));
    checksum_of(r["entry"].as_str().unwrap())
}

#[test]
fn s3_source_matches_local_directory() {
    let root = temp_dir("s3");
    let store_root = root.join("store");
    let data = store_root.join("bucket/datasets/pets");
    make_dataset(&data, &["cat", "dog"], 8, 11);
    let spec = write_spec(&root, "image.json", IMAGE_SPEC);
    let port = free_port();
    let mut server = Server(
        Command::new(find_binary("s3s-fs"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                "kiln-key",
                "--secret-key",
                "kiln-secret",
            ])
            .arg(&store_root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs"),
    );
    wait_for(port, &mut server);
    let endpoint = format!("http://127.0.0.1:{port}");
    let env = [
        ("AWS_ACCESS_KEY_ID", "kiln-key"),
        ("AWS_SECRET_ACCESS_KEY", "kiln-secret"),
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
    ];
    let cache = root.join("cache");
    let args = [
        "convert",
        "s3://bucket/datasets/pets",
        "--spec",
        &spec,
        "--cache",
        cache.to_str().unwrap(),
        "--include",
        "*.png",
        "--json",
    ];
    let report = json(&kiln_env(&args, &env));
    assert_eq!(report["rows"], 16, "{report}");
    assert_eq!(
        report["failures"].as_array().unwrap().len(),
        1,
        "cat/corrupt.png is reported"
    );
    let manifest = kiln::cache::read_manifest(Path::new(report["entry"].as_str().unwrap())).unwrap();
    assert_eq!(manifest.labels, ["cat", "dog"]);
    assert_eq!(
        checksum_of(report["entry"].as_str().unwrap()),
        local_reference(&data, &spec, &root.join("local"))
    );
    assert_eq!(json(&kiln_env(&args, &env))["cache_hit"], true);

    // s3s-fs checks signatures: a wrong secret is a clear error, not an empty dataset.
    let mut bad_env = env;
    bad_env[1] = ("AWS_SECRET_ACCESS_KEY", "wrong");
    let denied = kiln_env(&args, &bad_env);
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("listing source s3://bucket/datasets/pets"),
        "{}",
        stderr(&denied)
    );
    drop(server);
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn webdav_source_matches_local_directory() {
    let root = temp_dir("webdav");
    let served = root.join("served");
    let data = served.join("pets");
    make_dataset(&data, &["cat", "dog"], 6, 12);
    let spec = write_spec(&root, "image.json", IMAGE_SPEC);
    let port = free_port();
    let wsgidav = python().with_file_name("wsgidav");
    let mut server = Server(
        Command::new(&wsgidav)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--auth",
                "anonymous",
                "--root",
            ])
            .arg(&served)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wsgidav"),
    );
    wait_for(port, &mut server);
    let url = format!("http://127.0.0.1:{port}/pets/");
    let cache = root.join("cache");
    let report = json(&kiln(&[
        "convert",
        &url,
        "--spec",
        &spec,
        "--cache",
        cache.to_str().unwrap(),
        "--include",
        "*.png",
        "--json",
    ]));
    assert_eq!(report["rows"], 12, "{report}");
    assert_eq!(
        checksum_of(report["entry"].as_str().unwrap()),
        local_reference(&data, &spec, &root.join("local"))
    );
    drop(server);
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn unreachable_store_fails_quickly_with_a_clear_error() {
    let root = temp_dir("unreachable");
    let spec = write_spec(&root, "image.json", IMAGE_SPEC);
    let port = free_port(); // nothing listens here
    let started = Instant::now();
    let http = kiln(&[
        "convert",
        &format!("http://127.0.0.1:{port}/data/"),
        "--spec",
        &spec,
        "--cache",
        root.join("c").to_str().unwrap(),
    ]);
    assert!(!http.status.success());
    assert!(
        stderr(&http).contains(&format!("listing source http://127.0.0.1:{port}/data/")),
        "{}",
        stderr(&http)
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let s3 = kiln_env(
        &[
            "convert",
            "s3://bucket/x",
            "--spec",
            &spec,
            "--cache",
            root.join("c").to_str().unwrap(),
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_ENDPOINT", &endpoint),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    assert!(!s3.status.success());
    assert!(
        stderr(&s3).contains("listing source s3://bucket/x"),
        "{}",
        stderr(&s3)
    );
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "gave up only after {:?}",
        started.elapsed()
    );
    let bad_scheme = kiln(&[
        "convert",
        "ftp://host/x",
        "--spec",
        &spec,
        "--cache",
        root.join("c").to_str().unwrap(),
    ]);
    assert!(
        stderr(&bad_scheme).contains("unsupported source scheme `ftp://`"),
        "{}",
        stderr(&bad_scheme)
    );
    std::fs::remove_dir_all(root).unwrap();
}
