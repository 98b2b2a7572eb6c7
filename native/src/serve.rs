//! `kiln serve`: the labeling page (embedded in the binary) and, with `--dir`, a dataset's files
//! and a labels endpoint that saves `labels.csv` in that directory atomically.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

mod assets {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// The labels file `PUT /api/labels` writes, in the format `kiln convert --labels` reads.
pub const LABELS_FILE: &str = "labels.csv";
const MEDIA: &[&str] = &["wav", "png", "jpg", "jpeg"];
const MAX_BODY: usize = 64 << 20;

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

struct Response {
    status: &'static str,
    mime: String,
    body: Vec<u8>,
}

impl Response {
    fn ok(mime: &str, body: Vec<u8>) -> Self {
        Response {
            status: "200 OK",
            mime: mime.to_owned(),
            body,
        }
    }
    fn error(status: &'static str, message: impl Into<String>) -> Self {
        Response {
            status,
            mime: "text/plain; charset=utf-8".into(),
            body: message.into().into_bytes(),
        }
    }
}

fn read_request(stream: &mut TcpStream) -> Result<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or("/").to_owned(),
    );
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    if length > MAX_BODY {
        bail!("request body too large");
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let path = target.split('?').next().unwrap_or("/").to_owned();
    Ok(Request { method, path, body })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn list_media(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .is_some_and(|e| MEDIA.contains(&e.to_string_lossy().to_ascii_lowercase().as_str()))
            {
                if let Ok(rel) = path.strip_prefix(dir) {
                    files.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
    }
    files.sort();
    files
}

fn handle(request: Request, dir: Option<&Path>) -> Response {
    let route = if request.path == "/" {
        "/index.html"
    } else {
        request.path.as_str()
    };
    if let Some((_, mime, bytes)) = assets::ASSETS.iter().find(|(r, _, _)| *r == route) {
        return Response::ok(mime, bytes.to_vec());
    }
    let Some(dir) = dir else {
        return Response::error("404 Not Found", "not found (serve with --dir for a dataset)");
    };
    match (request.method.as_str(), route) {
        ("GET", "/api/files") => Response::ok(
            "application/json",
            serde_json::json!({ "files": list_media(dir) })
                .to_string()
                .into_bytes(),
        ),
        ("GET", "/api/labels") => match std::fs::read(dir.join(LABELS_FILE)) {
            Ok(bytes) => Response::ok("text/csv", bytes),
            Err(_) => Response::ok("text/csv", b"path,label\n".to_vec()),
        },
        ("PUT" | "POST", "/api/labels") => {
            let text = String::from_utf8_lossy(&request.body);
            if !text.starts_with("path,label") {
                return Response::error(
                    "400 Bad Request",
                    "labels must be CSV starting with the header path,label",
                );
            }
            match crate::fsio::write_atomic(&dir.join(LABELS_FILE), &request.body) {
                Ok(()) => Response::ok("text/plain", b"saved".to_vec()),
                Err(e) => Response::error("500 Internal Server Error", format!("{e:#}")),
            }
        }
        ("GET", path) if path.starts_with("/files/") => {
            let relative = percent_decode(&path["/files/".len()..]);
            if relative.split('/').any(|p| p == ".." || p.is_empty()) {
                return Response::error("400 Bad Request", "invalid path");
            }
            let file: PathBuf = dir.join(&relative);
            let mime = match file
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .as_deref()
            {
                Some("wav") => "audio/wav",
                Some("png") => "image/png",
                Some("jpg" | "jpeg") => "image/jpeg",
                _ => return Response::error("404 Not Found", "not a dataset file"),
            };
            match std::fs::read(&file) {
                Ok(bytes) => Response::ok(mime, bytes),
                Err(_) => Response::error("404 Not Found", format!("no file {relative}")),
            }
        }
        _ => Response::error("404 Not Found", "not found"),
    }
}

fn respond(mut stream: TcpStream, dir: Option<&Path>) -> Result<()> {
    let response = match read_request(&mut stream) {
        Ok(request) => handle(request, dir),
        Err(e) => Response::error("400 Bad Request", e.to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        response.status,
        response.mime,
        response.body.len()
    )?;
    stream.write_all(&response.body)?;
    Ok(())
}

/// Serves until the process is stopped.
pub fn serve(listen: &str, dir: Option<PathBuf>) -> Result<()> {
    if !assets::PAGE_COMPLETE {
        bail!("this kiln was built without the labeling page's wasm (run scripts/build-wasm, then rebuild)");
    }
    if let Some(d) = &dir {
        if !d.is_dir() {
            bail!("--dir {}: not a directory", d.display());
        }
    }
    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    eprintln!("kiln serve: http://{}/", listener.local_addr()?);
    let dir = Arc::new(dir);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let dir = dir.clone();
        std::thread::spawn(move || {
            let _ = respond(stream, dir.as_deref());
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, body: &[u8]) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            body: body.to_vec(),
        }
    }

    #[test]
    fn dataset_routes_list_serve_and_save_labels() {
        let dir = std::env::temp_dir().join(format!("kiln-serve-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a b")).unwrap();
        std::fs::write(dir.join("a b/x.wav"), b"RIFF").unwrap();
        std::fs::write(dir.join("notes.txt"), b"no").unwrap();
        let files = handle(request("GET", "/api/files", b""), Some(&dir));
        assert_eq!(
            String::from_utf8(files.body).unwrap(),
            r#"{"files":["a b/x.wav"]}"#
        );
        assert_eq!(
            handle(request("GET", "/files/a%20b/x.wav", b""), Some(&dir)).body,
            b"RIFF"
        );
        assert_eq!(
            handle(request("GET", "/files/../etc/passwd", b""), Some(&dir)).status,
            "400 Bad Request"
        );
        assert_eq!(
            handle(request("GET", "/files/notes.txt", b""), Some(&dir)).status,
            "404 Not Found"
        );
        let bad = handle(request("PUT", "/api/labels", b"file,class\n"), Some(&dir));
        assert_eq!(bad.status, "400 Bad Request");
        assert!(String::from_utf8(bad.body).unwrap().contains("path,label"));
        let csv = b"path,label\na b/x.wav,speech\n";
        assert_eq!(
            handle(request("PUT", "/api/labels", csv), Some(&dir)).status,
            "200 OK"
        );
        assert_eq!(std::fs::read(dir.join(LABELS_FILE)).unwrap(), csv);
        assert_eq!(handle(request("GET", "/api/labels", b""), Some(&dir)).body, csv);
        assert_eq!(
            handle(request("GET", "/api/files", b""), None).status,
            "404 Not Found"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
