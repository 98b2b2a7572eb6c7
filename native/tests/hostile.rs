//! Hostile and careless input to the dataset commands: each case ends in a clear error naming
//! the file (or shard) and the problem, or converts like any other file; never a crash, a hang
//! or silently wrong data.

mod support;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use kiln::loader::Loader;
use serde_json::Value;
use support::*;

fn convert_ok(source: &Path, spec: &str, cache: &Path, extra: &[&str]) -> Value {
    let out = convert_output(source, spec, cache, extra);
    assert!(out.status.success(), "{}", stderr(&out));
    json(&out)
}

/// A PNG header declaring `width` x `height` with no pixel data behind it.
fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let crc = crc32fast::hash(&ihdr);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc.to_be_bytes());
    // One empty zlib stream as IDAT: a complete file whose header is the only big thing.
    let idat = [&b"IDAT"[..], &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]].concat();
    png.extend_from_slice(&8u32.to_be_bytes());
    png.extend_from_slice(&idat);
    png.extend_from_slice(&crc32fast::hash(&idat).to_be_bytes());
    png.extend_from_slice(&[0, 0, 0, 0]);
    png.extend_from_slice(b"IEND");
    png.extend_from_slice(&crc32fast::hash(b"IEND").to_be_bytes());
    png
}

#[test]
fn one_bad_file_never_ends_a_skip_run_and_all_failed_exits_non_zero() {
    let root = temp_dir("hostile-skip");
    let data = root.join("data");
    make_dataset(&data, &["a"], 3, 1);
    fs::write(data.join("a/bomb.png"), png_bomb(60000, 60000)).unwrap();
    let spec = write_spec(&root, "image.json", IMAGE_SPEC);
    let report = convert_ok(&data, &spec, &root.join("cache"), &["--include", "*.png"]);
    assert_eq!(report["rows"], 3, "{report}");
    // The bomb and make_dataset's own corrupt.png.
    assert_eq!(report["failed"], 2);
    let bomb = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "a/bomb.png")
        .expect("the bomb is reported");
    assert!(bomb["error"].as_str().unwrap().contains("60000"), "{bomb}");

    // Nothing but bad files: non-zero exit, and nothing cached as a "success".
    let bad = root.join("bad");
    fs::create_dir_all(&bad).unwrap();
    fs::write(bad.join("x.png"), b"not a png").unwrap();
    fs::write(bad.join("y.png"), png_bomb(20000, 20000)).unwrap();
    let out = convert_output(&bad, &spec, &root.join("cache"), &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("all 2 items"), "{}", stderr(&out));
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn failed_files_are_retried_by_the_next_run() {
    let root = temp_dir("hostile-retry");
    let data = root.join("data");
    make_dataset(&data, &["a"], 2, 2);
    let spec = write_spec(&root, "image.json", IMAGE_SPEC);
    fs::remove_file(data.join("a/corrupt.png")).unwrap();
    let good = fs::read(data.join("a/000.png")).unwrap();
    // A file that fails now (its bytes are damaged) but reads fine later with the same
    // listing (size and modification time): a transient failure.
    let flaky = data.join("a/flaky.png");
    fs::write(&flaky, vec![0u8; good.len()]).unwrap();
    let listed_mtime = fs::metadata(&flaky).unwrap().modified().unwrap();
    let cache = root.join("cache");
    let first = convert_ok(&data, &spec, &cache, &["--include", "*.png"]);
    assert_eq!(
        (first["rows"].as_u64(), first["failed"].as_u64()),
        (Some(2), Some(1))
    );
    fs::write(&flaky, &good).unwrap();
    fs::File::options()
        .append(true)
        .open(&flaky)
        .unwrap()
        .set_modified(listed_mtime)
        .unwrap();
    let second = convert_ok(&data, &spec, &cache, &["--include", "*.png"]);
    assert_eq!(second["entry"], first["entry"], "same listing, same entry");
    assert_eq!(second["retried"], 1);
    assert_eq!(
        (second["rows"].as_u64(), second["failed"].as_u64()),
        (Some(3), Some(0))
    );
    let streamed = json(&kiln(&[
        "stream",
        second["entry"].as_str().unwrap(),
        "--json",
        "--ids",
    ]));
    let mut ids: Vec<u64> = streamed["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, vec![0, 1, 2]);
    fs::remove_dir_all(root).unwrap();
}

fn entry_with_shards(root: &Path) -> (String, Value) {
    let data = root.join("data");
    make_dataset(&data, &["a", "b"], 6, 3);
    let spec = write_spec(root, "audio.json", AUDIO_SPEC);
    let report = convert_ok(
        &data,
        &spec,
        &root.join("cache"),
        &["--include", "*.wav", "--shard-size", "20KB"],
    );
    let entry = report["entry"].as_str().unwrap().to_owned();
    let manifest: Value =
        serde_json::from_str(&fs::read_to_string(Path::new(&entry).join("manifest.json")).unwrap()).unwrap();
    assert!(manifest["shards"].as_array().unwrap().len() >= 2, "{manifest}");
    (entry, manifest)
}

fn expect_stream_and_export_fail(entry: &str, root: &Path, needle: &str) {
    let out = kiln(&["stream", entry, "--json"]);
    assert!(!out.status.success(), "stream accepted a damaged entry");
    assert!(
        stderr(&out).contains(needle),
        "{needle:?} not in: {}",
        stderr(&out)
    );
    let export = kiln(&[
        "export",
        entry,
        "--format",
        "tfrecord",
        "-o",
        root.join("tfr").to_str().unwrap(),
    ]);
    assert!(!export.status.success(), "export copied a damaged entry");
    assert!(
        stderr(&export).contains(needle),
        "{needle:?} not in: {}",
        stderr(&export)
    );
}

/// One hand edit of a manifest.
type ManifestEdit = Box<dyn Fn(&mut Value)>;

#[test]
fn damaged_shards_and_manifests_are_refused_naming_the_shard() {
    let root = temp_dir("hostile-shards");
    let (entry, manifest) = entry_with_shards(&root);
    let entry_dir = Path::new(&entry);
    let manifest_path = entry_dir.join("manifest.json");
    let shard0 = entry_dir.join(manifest["shards"][0]["file"].as_str().unwrap());
    let shard1 = entry_dir.join(manifest["shards"][1]["file"].as_str().unwrap());
    let original = fs::read(&shard0).unwrap();

    // 16 flipped bytes in the middle of a shard.
    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid..mid + 16].iter_mut().for_each(|b| *b ^= 0xff);
    fs::write(&shard0, &flipped).unwrap();
    expect_stream_and_export_fail(&entry, &root, "part-00000.parquet: SHA-256");
    fs::write(&shard0, &original).unwrap();

    // Two shards swapped on disk.
    let other = fs::read(&shard1).unwrap();
    fs::write(&shard0, &other).unwrap();
    fs::write(&shard1, &original).unwrap();
    expect_stream_and_export_fail(&entry, &root, "part-00000.parquet");
    fs::write(&shard0, &original).unwrap();
    fs::write(&shard1, &other).unwrap();
    assert!(
        kiln(&["stream", &entry]).status.success(),
        "restored entry streams"
    );

    // Hostile manifests: each edit on its own.
    let text = fs::read_to_string(&manifest_path).unwrap();
    let edits: Vec<(ManifestEdit, &str)> = vec![
        (
            Box::new(|m| m["format_version"] = 999.into()),
            "format_version 999",
        ),
        (
            Box::new(|m| {
                let first = m["shards"][0].clone();
                m["shards"][1] = first;
                m["rows"] = (m["shards"][0]["rows"].as_u64().unwrap() * 2).into();
            }),
            "listed twice",
        ),
        (
            Box::new(|m| m["shards"][0]["file"] = "/etc/passwd".into()),
            "not a file name inside the entry",
        ),
        (
            Box::new(|m| m["shards"][0]["file"] = "../escape.parquet".into()),
            "not a file name inside the entry",
        ),
        (
            Box::new(|m| m["shards"][0]["sha256"] = "0".repeat(64).into()),
            "does not match the manifest",
        ),
    ];
    for (edit, needle) in edits {
        let mut m: Value = serde_json::from_str(&text).unwrap();
        edit(&mut m);
        fs::write(&manifest_path, serde_json::to_string(&m).unwrap()).unwrap();
        expect_stream_and_export_fail(&entry, &root, needle);
    }
    fs::write(&manifest_path, &text).unwrap();

    // A truncated shard ends the library stream with an error, not a short epoch.
    fs::write(&shard1, &other[..other.len() - 100]).unwrap();
    let mut loader = Loader::builder(&entry)
        .batch_size(4)
        .epochs(Some(1))
        .build()
        .unwrap();
    let error = loader.find_map(|b| b.err()).expect("the stream must fail");
    assert!(matches!(error, kiln::Error::Shard { .. }), "{error:?}");
    assert!(error.to_string().contains("truncated"), "{error}");
    let out = kiln(&["stream", &entry]);
    assert!(!out.status.success());
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn awkward_file_names_convert_and_hidden_files_and_loops_do_not_end_the_listing() {
    let root = temp_dir("hostile-names");
    let data = root.join("data");
    fs::create_dir_all(data.join("cls")).unwrap();
    let mut rng = Rng(5);
    let names: Vec<std::ffi::OsString> = [
        &b"\xc3\xbc #?*[%\\.wav"[..],
        b"line\nbreak.wav",
        b"bad\xffutf8.wav",
        b"plain.wav",
    ]
    .iter()
    .map(|n| std::ffi::OsStr::from_bytes(n).to_owned())
    .collect();
    for name in &names {
        fs::write(data.join("cls").join(name), wav(&mut rng, 800)).unwrap();
    }
    // Hidden (Spark's rule: `.` and `_`) files and directories are not data.
    fs::write(data.join("cls/.hidden.wav"), wav(&mut rng, 800)).unwrap();
    fs::create_dir_all(data.join("_temporary")).unwrap();
    fs::write(data.join("_temporary/x.wav"), wav(&mut rng, 800)).unwrap();
    // A symlink loop is reported, not followed forever.
    std::os::unix::fs::symlink("..", data.join("cls/loop")).unwrap();
    let spec = write_spec(&root, "audio.json", AUDIO_SPEC);
    let report = convert_ok(&data, &spec, &root.join("cache"), &[]);
    assert_eq!(report["rows"], 4, "{report}");
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{report}");
    assert!(
        failures[0]["error"].as_str().unwrap().contains("symlink loop"),
        "{report}"
    );
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn cli_values_out_of_range_are_errors() {
    let root = temp_dir("hostile-cli");
    let data = root.join("data");
    make_dataset(&data, &["a"], 2, 4);
    let spec = write_spec(&root, "audio.json", AUDIO_SPEC);
    let out = convert_output(
        &data,
        &spec,
        &root.join("cache"),
        &["--include", "*.wav", "--workers", "100000"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid --workers: 100000 is not in 1..=1024"),
        "{}",
        stderr(&out)
    );
    let report = convert_ok(&data, &spec, &root.join("cache"), &["--include", "*.wav"]);
    let entry = report["entry"].as_str().unwrap();
    for (flag, value, needle) in [
        ("--prefetch", "18446744073709551615", "invalid prefetch"),
        ("--batch-size", "0", "invalid batch size"),
        ("--threads", "100000", "invalid threads"),
        ("--shard", "3/2", "need 0 <= i < n"),
    ] {
        let out = kiln(&["stream", entry, flag, value]);
        assert!(!out.status.success(), "{flag} {value}");
        assert!(stderr(&out).contains(needle), "{flag}: {}", stderr(&out));
    }
    let out = convert_output(&data, &spec, &root.join("cache"), &["--shard-size", "1e400"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--shard-size"), "{}", stderr(&out));
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn gc_skips_entries_in_use() {
    let root = temp_dir("hostile-gc");
    let data = root.join("data");
    make_dataset(&data, &["a"], 2, 6);
    let spec = write_spec(&root, "audio.json", AUDIO_SPEC);
    let cache = root.join("cache");
    let report = convert_ok(&data, &spec, &cache, &["--include", "*.wav"]);
    let entry = report["entry"].as_str().unwrap().to_owned();
    let loader = Loader::builder(&entry).build().unwrap();
    let options = kiln::cache::GcOptions {
        max_size: Some(0),
        max_age: None,
        keep_recent: std::time::Duration::ZERO,
    };
    assert!(
        kiln::cache::gc(&cache, options).unwrap().is_empty(),
        "gc removed an entry being read"
    );
    assert!(Path::new(&entry).join("manifest.json").is_file());
    let key = Path::new(&entry)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let busy = kiln::cache::remove_entry(&cache, &key).unwrap_err();
    assert!(busy.to_string().contains("in use"), "{busy}");
    drop(loader);
    // The loader has released its lock, but a child process that another test thread forked
    // just now may still hold an inherited copy of the lock's file descriptor until it execs
    // (locks belong to the open file, which fork shares): gc then rightly sees the entry in
    // use. Such a hold lasts microseconds, so a few tries settle it.
    let mut removed = Vec::new();
    for _ in 0..200 {
        removed = kiln::cache::gc(&cache, options).unwrap();
        if !removed.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(removed, vec![key]);
    fs::remove_dir_all(root).unwrap();
}

/// A WebDAV server that lists one 32 KiB file and then, asked for it, announces 50 GB and
/// keeps sending until the client hangs up.
fn lying_webdav_server() -> (u16, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                    break;
                }
            }
            if request_line.starts_with("PROPFIND") {
                let body = r#"<?xml version="1.0" encoding="utf-8"?>
<D:multistatus xmlns:D="DAV:"><D:response><D:href>/data/a/x.wav</D:href><D:propstat><D:prop>
<D:getlastmodified>Thu, 26 Nov 2026 10:00:00 GMT</D:getlastmodified><D:getcontentlength>32768</D:getcontentlength>
<D:resourcetype/><D:getetag>"v1"</D:getetag></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 207 Multi-Status\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            } else {
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: 50000000000\r\nConnection: close\r\n\r\n"
                );
                let chunk = vec![0u8; 64 << 10];
                // Until the client stops reading (it must, long before 50 GB).
                for _ in 0..(1u64 << 20) {
                    if stream.write_all(&chunk).is_err() {
                        break;
                    }
                }
            }
        }
    });
    (port, handle)
}

#[test]
fn a_remote_object_is_never_read_past_its_listed_size() {
    let root = temp_dir("hostile-remote");
    let spec = write_spec(&root, "audio.json", AUDIO_SPEC);
    let (port, server) = lying_webdav_server();
    let started = std::time::Instant::now();
    let out = kiln(&[
        "convert",
        &format!("http://127.0.0.1:{port}/data/"),
        "--spec",
        &spec,
        "--cache",
        root.join("cache").to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "every item failed: non-zero exit");
    assert!(
        stderr(&out).contains("a/x.wav: reading: the store sent more than the 32768 bytes it listed"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed().as_secs() < 60, "kiln kept reading");
    server.join().unwrap();
    fs::remove_dir_all(root).unwrap();
}
