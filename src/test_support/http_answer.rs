//! Reading HTTP/1 answers on a blocking socket, for the unit tests and the integration tests
//! (which include this file with `#[path]`): one file, one parser.

/// One answer read from a kept-alive connection: status, `Connection` header, body.
/// `None` when the connection closes (or nothing comes within `limit`) before a full answer.
pub(crate) fn read_kept_alive_answer(
    s: &mut std::net::TcpStream,
    limit: std::time::Duration,
) -> Option<(u16, Option<String>, String)> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let header = |name: &str| {
                head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
            };
            let len: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                let status = head.split_whitespace().nth(1)?.parse().ok()?;
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + len]).to_string();
                return Some((status, header("connection"), body));
            }
        }
        match std::io::Read::read(s, &mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
}
