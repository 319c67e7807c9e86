//! A raw HTTP/1.1 client for the abuse cases: it controls exactly what is sent and when (a
//! body a byte at a time, headers never finished) and sees an answer the server sends before
//! reading the body, whatever happens to the rest of the body.

use std::time::{Duration, Instant};

/// How a raw HTTP exchange ended.
#[derive(Debug)]
pub enum RawOutcome {
    /// A whole response arrived.
    Response {
        /// HTTP status.
        status: u16,
        /// Its body.
        body: String,
    },
    /// The server closed (or reset) the connection without a whole response.
    Closed,
}

/// The body a raw request sends: `total` bytes of `byte`, in chunks of `chunk` with `pause`
/// after each.
#[derive(Debug, Clone, Copy)]
pub struct RawBody {
    /// Bytes in all.
    pub total: u64,
    /// Bytes per write.
    pub chunk: usize,
    /// The byte repeated.
    pub byte: u8,
    /// Pause after each write.
    pub pause: Duration,
}

/// Sends `head` (a request line and headers, without the blank line) and then `body` on a new
/// connection to `port`, reading at the same time; returns as soon as a whole response has
/// arrived or the connection is closed — so a server that answers before reading the body is
/// seen answering, whatever happens to the rest of the body — and how long that took.
pub async fn raw_exchange(port: u16, head: &str, body: Option<RawBody>) -> (RawOutcome, Duration) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let started = Instant::now();
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the service");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!("{head}\r\n\r\n");
    let sending = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        if let Some(body) = body {
            let chunk = vec![body.byte; body.chunk];
            let mut left = body.total;
            while left > 0 {
                let now = usize::try_from(left.min(chunk.len() as u64)).unwrap();
                writer.write_all(&chunk[..now]).await?;
                left -= now as u64;
                if !body.pause.is_zero() {
                    tokio::time::sleep(body.pause).await;
                }
            }
        }
        // Keep the write half open: closing it could look like a client giving up.
        std::future::pending::<()>().await;
        Ok::<(), std::io::Error>(())
    });
    let mut received = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let outcome = loop {
        if let Some(response) = parse_response(&received) {
            break response;
        }
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break parse_response(&received).unwrap_or(RawOutcome::Closed),
            Ok(read) => received.extend_from_slice(&buffer[..read]),
        }
    };
    sending.abort();
    (outcome, started.elapsed())
}

/// A whole HTTP/1.1 response with a `Content-Length` body, if `bytes` holds one.
fn parse_response(bytes: &[u8]) -> Option<RawOutcome> {
    let end = bytes.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let body = bytes.get(end + 4..end + 4 + length)?;
    Some(RawOutcome::Response {
        status,
        body: String::from_utf8_lossy(body).into_owned(),
    })
}
