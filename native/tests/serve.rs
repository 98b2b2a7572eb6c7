//! `kiln serve` against a hostile client: each test starts an in-process server on
//! 127.0.0.1:0 and talks raw HTTP/1.1 over a `TcpStream`, so it can send what a browser
//! never would (a 1 MiB request line, a foreign `Host:`, `%aé`) and see exactly what comes back.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln::serve::{bind, bind_with_limits, Limits, ServeError, ServeOptions, LABELS_FILE};

const TOKEN: &str = "0123456789abcdef0123";

struct Running {
    addr: SocketAddr,
    // Serving stops when the runtime is dropped with the test.
    _runtime: tokio::runtime::Runtime,
}

fn try_start(options: ServeOptions, limits: Limits) -> Result<Running, ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(bind_with_limits(options, limits))?;
    let addr = server.local_addr();
    runtime.spawn(server.run());
    Ok(Running {
        addr,
        _runtime: runtime,
    })
}

fn start(dir: &Path) -> Running {
    start_with(dir, Limits::default())
}

fn start_with(dir: &Path, limits: Limits) -> Running {
    try_start(options(Some(dir), None), limits).unwrap()
}

fn options(dir: Option<&Path>, token: Option<&str>) -> ServeOptions {
    ServeOptions {
        listen: "127.0.0.1:0".into(),
        dir: dir.map(Path::to_owned),
        token: token.map(str::to_owned),
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn parse(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let (mut out, mut rest) = (Vec::new(), &body[..]);
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = &rest[line_end + 4 + size..];
        }
        body = out;
    }
    Reply {
        status,
        headers,
        body,
    }
}

/// Sends `raw` (which should ask for `Connection: close`) and reads the reply to its end.
fn send(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(raw).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    parse(&reply)
}

fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        raw += &format!("Host: 127.0.0.1:{}\r\n", addr.port());
    }
    for (name, value) in headers {
        raw += &format!("{name}: {value}\r\n");
    }
    raw += &format!("Content-Length: {}\r\n\r\n", body.len());
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    send(addr, &raw)
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"")
}

fn files(addr: SocketAddr) -> Vec<String> {
    let reply = get(addr, "/api/files");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn routes_list_stream_and_save_labels() {
    let dir = temp_dir("routes");
    std::fs::create_dir_all(dir.join("a b")).unwrap();
    std::fs::write(dir.join("a b/x.wav"), b"RIFF0123456789").unwrap();
    std::fs::write(dir.join("ü #?.PNG"), b"png").unwrap();
    std::fs::write(dir.join("notes.txt"), b"no").unwrap();
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::write(dir.join(".git/hidden.wav"), b"no").unwrap();
    let server = start(&dir);
    let addr = server.addr;

    assert_eq!(files(addr), ["a b/x.wav", "ü #?.PNG"]);
    let file = get(addr, "/files/a%20b/x.wav");
    assert_eq!((file.status, file.body.as_slice()), (200, &b"RIFF0123456789"[..]));
    assert_eq!(file.header("content-type"), Some("audio/wav"));
    assert_eq!(file.header("cache-control"), Some("no-store"));
    let png = get(addr, "/files/%C3%BC%20%23%3F.PNG");
    assert_eq!((png.status, png.header("content-type")), (200, Some("image/png")));

    // Streamed from disk with Range support: only the asked-for bytes come back.
    let range = request(addr, "GET", "/files/a%20b/x.wav", &[("Range", "bytes=4-7")], b"");
    assert_eq!(range.status, 206);
    assert_eq!(range.body, b"0123");
    assert_eq!(range.header("content-range"), Some("bytes 4-7/14"));

    let traversal = get(addr, "/files/../etc/passwd");
    assert_eq!(traversal.status, 400, "{}", traversal.text());
    let encoded = get(addr, "/files/%2e%2e/%2e%2e/etc/passwd");
    assert_eq!(encoded.status, 400, "{}", encoded.text());
    let not_media = get(addr, "/files/notes.txt");
    assert_eq!(not_media.status, 404);
    assert_eq!(not_media.text(), "kiln serve: no dataset file \"notes.txt\"\n");

    assert_eq!(get(addr, "/api/labels").text(), "path,label\n");
    let bad = request(addr, "PUT", "/api/labels", &[], b"file,class\n");
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.text(),
        "kiln serve: labels must be CSV starting with the header path,label\n"
    );
    let csv = b"path,label\na b/x.wav,speech\n";
    let saved = request(addr, "PUT", "/api/labels", &[("Content-Type", "text/csv")], csv);
    assert_eq!((saved.status, saved.text().as_str()), (200, "saved"));
    assert_eq!(std::fs::read(dir.join(LABELS_FILE)).unwrap(), csv);
    assert_eq!(get(addr, "/api/labels").body, csv);

    let no_dir = try_start(options(None, None), Limits::default()).unwrap();
    let reply = get(no_dir.addr, "/api/files");
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.text(),
        "kiln serve: not found (serve with --dir for a dataset)\n"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[test]
fn symlink_loops_end_and_list_each_file() {
    use std::os::unix::fs::symlink;
    let dir = temp_dir("loops");
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    std::fs::write(dir.join("a/b/x.wav"), b"RIFF").unwrap();
    symlink(&dir, dir.join("a/b/to_root")).unwrap();
    symlink("..", dir.join("a/up")).unwrap();
    symlink(".", dir.join("self")).unwrap();
    // Two directories linking to each other.
    std::fs::create_dir_all(dir.join("p")).unwrap();
    std::fs::create_dir_all(dir.join("q")).unwrap();
    symlink(dir.join("q"), dir.join("p/q")).unwrap();
    symlink(dir.join("p"), dir.join("q/p")).unwrap();
    std::fs::write(dir.join("q/y.png"), b"png").unwrap();
    let server = start(&dir);

    let started = Instant::now();
    let listed = files(server.addr);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "listing took {:?}",
        started.elapsed()
    );
    // Reached through one link that is not a loop (p/q is q, seen from p), each file is
    // listed; every way back to an ancestor is cut.
    assert_eq!(listed, ["a/b/x.wav", "p/q/y.png", "q/y.png"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[test]
fn links_out_of_the_dir_are_neither_listed_nor_served() {
    use std::os::unix::fs::symlink;
    let base = temp_dir("escape");
    let (dir, outside) = (base.join("data"), base.join("outside"));
    std::fs::create_dir_all(dir.join("inner")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.wav"), b"secret").unwrap();
    std::fs::write(dir.join("inner/ok.wav"), b"RIFF").unwrap();
    symlink("/etc/passwd", dir.join("x.wav")).unwrap();
    symlink(outside.join("secret.wav"), dir.join("secret.wav")).unwrap();
    symlink(&outside, dir.join("outside_dir")).unwrap();
    symlink(dir.join("inner/ok.wav"), dir.join("alias.wav")).unwrap();
    symlink(dir.join("nowhere.wav"), dir.join("dangling.wav")).unwrap();
    let server = start(&dir);
    let addr = server.addr;

    assert_eq!(files(addr), ["alias.wav", "inner/ok.wav"]);
    for path in ["x.wav", "secret.wav", "outside_dir/secret.wav"] {
        let reply = get(addr, &format!("/files/{path}"));
        assert_eq!(reply.status, 403, "{path}");
        assert_eq!(
            reply.text(),
            format!("kiln serve: \"{path}\" links outside the served directory\n")
        );
        assert!(!reply.text().contains("root:"), "served /etc/passwd");
    }
    assert_eq!(get(addr, "/files/alias.wav").body, b"RIFF");
    assert_eq!(get(addr, "/files/dangling.wav").status, 404);

    // labels.csv is read through the same check.
    symlink(outside.join("secret.wav"), dir.join(LABELS_FILE)).unwrap();
    let labels = get(addr, "/api/labels");
    assert_eq!(labels.status, 403);
    assert_eq!(
        labels.text(),
        "kiln serve: labels.csv links outside the served directory\n"
    );
    std::fs::remove_dir_all(base).unwrap();
}

/// Every format `load_audio` and `decode_image` read is listed and served with its content
/// type, under the same rules as WAV: hidden names skipped, links out refused, traversal a 400.
#[cfg(unix)]
#[test]
fn audio_and_image_formats_are_listed_and_served_with_their_types() {
    use std::os::unix::fs::symlink;
    let base = temp_dir("formats");
    let (dir, outside) = (base.join("data"), base.join("outside"));
    std::fs::create_dir_all(dir.join("clips")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let served = [
        ("clips/a.flac", "audio/flac"),
        ("clips/b.MP3", "audio/mpeg"),
        ("clips/c.ogg", "audio/ogg"),
        ("clips/d.oga", "audio/ogg"),
        ("e.webp", "image/webp"),
        ("f.wav", "audio/wav"),
    ];
    for (path, _) in served {
        std::fs::write(dir.join(path), path.as_bytes()).unwrap();
    }
    std::fs::write(dir.join("clips/.hidden.flac"), b"no").unwrap();
    std::fs::write(dir.join("clips/g.opus"), b"no").unwrap();
    std::fs::write(outside.join("secret.flac"), b"secret").unwrap();
    symlink(outside.join("secret.flac"), dir.join("secret.flac")).unwrap();
    symlink(outside.join("secret.flac"), dir.join("clips/leak.webp")).unwrap();
    let server = start(&dir);
    let addr = server.addr;

    let mut expected: Vec<&str> = served.iter().map(|(path, _)| *path).collect();
    expected.sort();
    assert_eq!(files(addr), expected);
    for (path, mime) in served {
        let reply = get(addr, &format!("/files/{path}"));
        assert_eq!(
            (reply.status, reply.header("content-type")),
            (200, Some(mime)),
            "{path}"
        );
        assert_eq!(reply.body, path.as_bytes(), "{path}");
    }
    for path in ["secret.flac", "clips/leak.webp"] {
        let reply = get(addr, &format!("/files/{path}"));
        assert_eq!(reply.status, 403, "{path}");
        assert_eq!(
            reply.text(),
            format!("kiln serve: \"{path}\" links outside the served directory\n")
        );
    }
    assert_eq!(get(addr, "/files/clips/.hidden.flac").status, 404);
    assert_eq!(get(addr, "/files/clips/g.opus").status, 404);
    assert_eq!(
        get(addr, "/files/clips/%2e%2e/%2e%2e/outside/secret.flac").status,
        400
    );
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn cross_origin_writes_are_refused() {
    let dir = temp_dir("origin");
    let server = start(&dir);
    let addr = server.addr;
    let own = format!("http://127.0.0.1:{}", addr.port());
    let csv = b"path,label\nx.wav,mine\n";
    let saved = request(
        addr,
        "PUT",
        "/api/labels",
        &[("Origin", &own), ("Sec-Fetch-Site", "same-origin")],
        csv,
    );
    assert_eq!(saved.status, 200, "{}", saved.text());

    let evil = request(
        addr,
        "POST",
        "/api/labels",
        &[("Origin", "http://evil.example"), ("Content-Type", "text/plain")],
        b"path,label\nx.wav,evil\n",
    );
    assert_eq!(evil.status, 403);
    assert_eq!(
        evil.text(),
        "kiln serve: refusing a cross-origin POST /api/labels (Origin: http://evil.example): \
         only the page served here may write\n"
    );
    // Another port on the same host is another origin (and `same-site` to the browser).
    let other_port = request(
        addr,
        "PUT",
        "/api/labels",
        &[("Sec-Fetch-Site", "same-site")],
        b"path,label\nx.wav,evil\n",
    );
    assert_eq!(other_port.status, 403);
    assert!(
        other_port.text().contains("(Sec-Fetch-Site: same-site)"),
        "{}",
        other_port.text()
    );
    let null_origin = request(addr, "PUT", "/api/labels", &[("Origin", "null")], b"path,label\n");
    assert_eq!(null_origin.status, 403);
    assert_eq!(
        std::fs::read(dir.join(LABELS_FILE)).unwrap(),
        csv,
        "a refused write changed the file"
    );

    // Reads stay open to any origin (the browser keeps their answers from foreign pages).
    let read = request(
        addr,
        "GET",
        "/api/labels",
        &[("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!(read.status, 200);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_foreign_host_is_refused() {
    let dir = temp_dir("host");
    let server = start(&dir);
    let addr = server.addr;
    let port = addr.port();
    let rebound = request(
        addr,
        "GET",
        "/api/files",
        &[("Host", &format!("evil.example:{port}"))],
        b"",
    );
    assert_eq!(rebound.status, 403);
    assert_eq!(
        rebound.text(),
        format!(
            "kiln serve: Host \"evil.example:{port}\" does not name this server (only 127.0.0.1, \
             [::1] or localhost on port {port}; this stops DNS rebinding); use http://127.0.0.1:{port}/\n"
        )
    );
    let write = request(
        addr,
        "PUT",
        "/api/labels",
        &[("Host", "evil.example")],
        b"path,label\n",
    );
    assert_eq!(write.status, 403);
    assert!(!dir.join(LABELS_FILE).exists());
    let wrong_port = request(addr, "GET", "/api/files", &[("Host", "127.0.0.1:1")], b"");
    assert_eq!(wrong_port.status, 403);
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let ok = request(addr, "GET", "/api/files", &[("Host", &host)], b"");
        assert_eq!(ok.status, 200, "{host}: {}", ok.text());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn concurrent_label_saves_each_land_whole() {
    let dir = temp_dir("concurrent");
    let server = start(&dir);
    let addr = server.addr;
    // Large enough that writes overlap; each body is one writer's, repeated.
    let body = |writer: usize, round: usize| {
        let mut csv = String::from("path,label\n");
        for i in 0..4000 {
            csv += &format!("w{writer}/r{round}/{i}.wav,class{writer}\n");
        }
        csv
    };
    let writers: Vec<_> = (0..12)
        .map(|w| {
            std::thread::spawn(move || {
                for round in 0..4 {
                    let reply = request(addr, "PUT", "/api/labels", &[], body(w, round).as_bytes());
                    assert_eq!((reply.status, reply.text()), (200, "saved".to_owned()));
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let saved = std::fs::read_to_string(dir.join(LABELS_FILE)).unwrap();
    let whole = (0..12).any(|w| (0..4).any(|r| saved == body(w, r)));
    assert!(whole, "labels.csv mixes saves ({} bytes)", saved.len());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != LABELS_FILE)
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_huge_request_line_is_refused_without_buffering_it() {
    let dir = temp_dir("header");
    let server = start(&dir);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // Up to 200 MiB of request line, written until the server hangs up.
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![b'a'; 1 << 20];
            let mut sent = stream.write_all(b"GET /").map(|()| 5usize).unwrap_or(0);
            for _ in 0..200 {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
                sent += chunk.len();
            }
            sent
        })
    };
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let sent = writer.join().unwrap();
    assert!(sent < 32 << 20, "the server kept reading: {sent} bytes taken");
    // The 431 may be lost to a reset when the server closes with our bytes unread; when it
    // arrives it says what happened.
    if !reply.is_empty() {
        assert_eq!(parse(&reply).status, 431, "{}", String::from_utf8_lossy(&reply));
    }
    // The server is fine afterwards.
    assert_eq!(files(server.addr), Vec::<String>::new());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn oversized_headers_get_431() {
    let dir = temp_dir("header431");
    let server = start(&dir);
    let big = "x".repeat(20 << 10);
    let reply = request(server.addr, "GET", "/api/files", &[("X-Big", &big)], b"");
    assert_eq!(reply.status, 431);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn idle_and_slow_connections_time_out() {
    let dir = temp_dir("idle");
    let limits = Limits::default()
        .with_header_read_timeout(Duration::from_millis(300))
        .with_request_timeout(Duration::from_millis(500));
    let server = start_with(&dir, limits);
    let addr = server.addr;
    let closed_within = |mut stream: TcpStream, limit: Duration| {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(
            started.elapsed() < limit,
            "connection kept {:?}",
            started.elapsed()
        );
        rest
    };

    // A connection that never sends anything.
    closed_within(TcpStream::connect(addr).unwrap(), Duration::from_secs(5));

    // A keep-alive connection, idle after one answered request.
    let mut stream = TcpStream::connect(addr).unwrap();
    let host = format!("Host: 127.0.0.1:{}\r\n", addr.port());
    stream
        .write_all(format!("GET /api/labels HTTP/1.1\r\n{host}\r\n").as_bytes())
        .unwrap();
    let answered = closed_within(stream, Duration::from_secs(5));
    assert!(
        answered.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answered)
    );

    // Headers trickled a byte at a time (slowloris) are cut off by the header deadline.
    let mut stream = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    for byte in format!("GET /api/labels HTTP/1.1\r\n{host}X-Slow: ")
        .bytes()
        .chain(std::iter::repeat(b'a'))
    {
        if stream.write_all(&[byte]).is_err() || started.elapsed() > Duration::from_secs(5) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "slow headers were never cut off"
    );

    // A body that never arrives: 408 once the request deadline passes.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(format!("PUT /api/labels HTTP/1.1\r\n{host}Content-Length: 100\r\n\r\npath,").as_bytes())
        .unwrap();
    let reply = closed_within(stream, Duration::from_secs(5));
    let reply = parse(&reply);
    assert_eq!(reply.status, 408);
    assert!(!dir.join(LABELS_FILE).exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_client_that_stops_reading_is_dropped() {
    let dir = temp_dir("stall");
    let size = 48usize << 20;
    std::fs::write(dir.join("big.wav"), vec![7u8; size]).unwrap();
    let server = start_with(
        &dir,
        Limits::default().with_write_timeout(Duration::from_millis(300)),
    );
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .write_all(
            format!(
                "GET /files/big.wav HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
                server.addr.port()
            )
            .as_bytes(),
        )
        .unwrap();
    // Read nothing while the socket buffers fill and the server waits.
    std::thread::sleep(Duration::from_secs(2));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    let head = String::from_utf8_lossy(&got[..got.len().min(200)]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {size}")), "{head}");
    // The connection ended (rather than waiting on us forever) before the whole file came.
    assert!(
        got.len() < size,
        "the whole file arrived: the server never gave up"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn malformed_percent_encoding_is_a_400_not_a_crash() {
    let dir = temp_dir("percent");
    std::fs::write(dir.join("x.wav"), b"RIFF").unwrap();
    let server = start(&dir);
    let addr = server.addr;
    let host = format!("Host: 127.0.0.1:{}", addr.port());
    // `%aé` as raw UTF-8 bytes on the wire, as a hostile client would send it.
    let raw = send(
        addr,
        format!("GET /files/%aé.wav HTTP/1.1\r\n{host}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(raw.status, 400, "{}", raw.text());
    for (path, why) in [
        ("/files/%a%C3%A9.wav", "`%` must be followed by two hex digits"),
        ("/files/%zz.wav", "`%` must be followed by two hex digits"),
        ("/files/x.wav%", "`%` must be followed by two hex digits"),
        ("/files/%FF%FE.wav", "not UTF-8 once decoded"),
    ] {
        let reply = get(addr, path);
        assert_eq!(reply.status, 400, "{path}");
        assert!(
            reply.text().starts_with("kiln serve: invalid path"),
            "{path}: {}",
            reply.text()
        );
        assert!(reply.text().contains(why), "{path}: {}", reply.text());
    }
    // Still serving.
    assert_eq!(get(addr, "/files/x.wav").body, b"RIFF");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_network_address_needs_a_token() {
    let refused = try_start(
        ServeOptions {
            listen: "0.0.0.0:0".into(),
            dir: None,
            token: None,
        },
        Limits::default(),
    )
    .err()
    .expect("started on 0.0.0.0 without a token");
    assert!(matches!(refused, ServeError::TokenRequired { .. }));
    assert_eq!(
        refused.to_string(),
        "--listen 0.0.0.0:0 is reachable from the network; refusing to start without a token \
         (pass --token or set KILN_TOKEN, e.g. to the output of `openssl rand -hex 16`)"
    );
    let weak = try_start(options(None, Some("hunter2")), Limits::default())
        .err()
        .unwrap();
    assert_eq!(
        weak.to_string(),
        "--token: must be 16 to 256 characters (got 7); e.g. `openssl rand -hex 16`"
    );

    let dir = temp_dir("token");
    std::fs::write(dir.join("x.wav"), b"RIFF").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime
        .block_on(bind(ServeOptions {
            listen: "0.0.0.0:0".into(),
            dir: Some(dir.clone()),
            token: Some(TOKEN.into()),
        }))
        .unwrap();
    assert!(server.is_network_reachable());
    let port = server.local_addr().port();
    assert_eq!(server.url(), format!("http://127.0.0.1:{port}/?token={TOKEN}"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    runtime.spawn(server.run());

    let anonymous = get(addr, "/api/files");
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.text(),
        "kiln serve: this server needs its token: open the link `kiln serve` printed \
         (http://HOST:PORT/?token=TOKEN) or send `Authorization: Bearer TOKEN`\n"
    );
    assert_eq!(get(addr, "/files/x.wav").status, 401);
    let wrong = request(
        addr,
        "GET",
        "/api/files",
        &[("Authorization", "Bearer 0123456789abcdef0124")],
        b"",
    );
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let ok = request(addr, "GET", "/files/x.wav", &[("Authorization", &bearer)], b"");
    assert_eq!((ok.status, ok.body.as_slice()), (200, &b"RIFF"[..]));
    // With the token, the server may be reached by a name on the network.
    let named = request(
        addr,
        "GET",
        "/api/files",
        &[("Authorization", &bearer), ("Host", "gpu-box:1")],
        b"",
    );
    assert_eq!(named.status, 200);
    // ...but a write still has to come from the page.
    let forged = request(
        addr,
        "PUT",
        "/api/labels",
        &[("Authorization", &bearer), ("Origin", "http://evil.example")],
        b"path,label\n",
    );
    assert_eq!(forged.status, 403);

    // The tokened link: the token becomes an HttpOnly, SameSite=Strict cookie and leaves the URL.
    let link = get(addr, &format!("/?backend=cpu&token={TOKEN}"));
    assert_eq!(link.status, 303);
    assert_eq!(link.header("location"), Some("/?backend=cpu"));
    let cookie = link.header("set-cookie").unwrap();
    assert_eq!(
        cookie,
        format!("kiln_token_{port}={TOKEN}; HttpOnly; SameSite=Strict; Path=/")
    );
    let with_cookie = request(
        addr,
        "GET",
        "/api/files",
        &[("Cookie", &format!("theme=dark; kiln_token_{port}={TOKEN}"))],
        b"",
    );
    assert_eq!(with_cookie.status, 200, "{}", with_cookie.text());
    let other_port_cookie = request(
        addr,
        "GET",
        "/api/files",
        &[("Cookie", &format!("kiln_token_1={TOKEN}"))],
        b"",
    );
    assert_eq!(other_port_cookie.status, 401);
    let bad_link = get(addr, "/?token=guess");
    assert_eq!(
        (bad_link.status, bad_link.text().as_str()),
        (401, "kiln serve: wrong token in the link\n")
    );
    drop(runtime);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_token_may_be_used_on_loopback() {
    let dir = temp_dir("loopback-token");
    let server = try_start(options(Some(&dir), Some(TOKEN)), Limits::default()).unwrap();
    assert_eq!(get(server.addr, "/api/files").status, 401);
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        request(
            server.addr,
            "GET",
            "/api/files",
            &[("Authorization", &bearer)],
            b""
        )
        .status,
        200
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_cli_refuses_a_network_address_without_a_token_and_warns_with_one() {
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let out = Command::new(kiln)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("KILN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("--listen 0.0.0.0:0 is reachable from the network; refusing to start without a token"),
        "{stderr}"
    );
    let out = Command::new(kiln)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("KILN_TOKEN", "short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token: must be 16 to 256 characters (got 5)"));

    // With a token it starts (or, in a build without the page's wasm, stops after binding),
    // warning first that it is reachable from the network.
    let mut child = Command::new(kiln)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("KILN_TOKEN", TOKEN)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        first.starts_with("kiln serve: warning: listening on 0.0.0.0:")
            && first.contains("reachable from the network; every request must carry the token"),
        "{first}"
    );
}

/// The child half of `fd_exhaustion_backs_off_instead_of_spinning`: run under a low fd limit,
/// it serves, uses up every descriptor, and gives them back after two seconds.
#[test]
#[ignore = "run by fd_exhaustion_backs_off_instead_of_spinning"]
fn fd_exhaustion_child() {
    if std::env::var_os("KILN_SERVE_FD_CHILD").is_none() {
        return;
    }
    let dir = temp_dir("fd-child");
    std::fs::write(dir.join("x.wav"), b"RIFF").unwrap();
    let server = start(&dir);
    let mut held = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        held.push(file);
    }
    println!("ready {}", server.addr);
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    drop(held);
    std::thread::sleep(Duration::from_secs(10));
}

#[cfg(target_os = "linux")]
#[test]
fn fd_exhaustion_backs_off_instead_of_spinning() {
    /// User plus system CPU time of a process, in clock ticks (1/100 s).
    fn cpu_ticks(pid: u32) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
    let test_binary = std::env::current_exe().unwrap();
    let mut child = Command::new("bash")
        .args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""])
        .arg(test_binary)
        .args([
            "fd_exhaustion_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KILN_SERVE_FD_CHILD", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("child ended before serving").unwrap();
        // The harness prints `test fd_exhaustion_child ... ` on the same line first.
        if let Some((_, addr)) = line.split_once("ready ") {
            break addr.parse().unwrap();
        }
    };
    // The server cannot accept this connection until the child frees its descriptors.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(
            format!(
                "GET /api/files HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                addr.port()
            )
            .as_bytes(),
        )
        .unwrap();
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(child.id()) - before;
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut reply = Vec::new();
    let read = stream.read_to_end(&mut reply);
    let _ = child.kill();
    let _ = child.wait();
    // A loop retrying accept at once burns a whole core for that second (100 ticks).
    assert!(spent < 30, "the accept loop spun: {spent} ticks of CPU in 1 s");
    read.unwrap();
    let reply = parse(&reply);
    assert_eq!(
        (reply.status, reply.text()),
        (200, r#"{"files":["x.wav"]}"#.to_owned())
    );
}

#[test]
fn run_until_stops_accepting_when_told() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(bind(options(None, None))).unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = runtime.spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    assert_eq!(get(addr, "/api/files").status, 404);
    stop.send(()).unwrap();
    runtime.block_on(serving).unwrap();
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}
