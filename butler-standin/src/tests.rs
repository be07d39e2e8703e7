//! The stand-in answers as Butler's source says (see lib.rs for the lines).

use super::*;

/// One GET on a fresh connection; returns the status code, the head (lower-cased) and the body.
fn get(at: SocketAddr, path: &str) -> io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&at, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )?;
    let mut all = String::new();
    s.read_to_string(&mut all)?;
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
    let code = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, head.to_ascii_lowercase(), body.to_string()))
}

fn local(opts: Options) -> Standin {
    Standin::start(Options {
        api: Some("127.0.0.1:0".parse().unwrap()),
        control: None,
        ..opts
    })
    .expect("stand-in starts")
}

#[test]
fn ping_answers_as_butler_16() {
    let s = local(Options::default());
    let (code, head, body) = get(s.api_addr().unwrap(), "/v4/butlerping").unwrap();
    assert_eq!(code, 200);
    assert!(
        head.contains("content-type: application/json; charset=utf-8"),
        "{head}"
    );
    assert_eq!(
        body,
        r#"{"response":"Butler reporting for duty","butlerVersion":"16.0.4"}"#
    );
    assert_eq!(s.stats().ping_ok, 1);
}

#[test]
fn butler_before_6_has_no_version_and_an_off_endpoint_is_fastifys_404() {
    let s = local(Options {
        version: None,
        ..Options::default()
    });
    let (_, _, body) = get(s.api_addr().unwrap(), "/v4/butlerping").unwrap();
    assert_eq!(body, r#"{"response":"Butler reporting for duty"}"#);
    s.set_ping(false);
    let (code, _, body) = get(s.api_addr().unwrap(), "/v4/butlerping").unwrap();
    assert_eq!(code, 404);
    assert_eq!(
        body,
        r#"{"message":"Route GET:/v4/butlerping not found","error":"Not Found","statusCode":404}"#
    );
}

#[test]
fn over_the_rate_limit_is_429() {
    let s = local(Options {
        rate_limit: 3,
        ..Options::default()
    });
    let at = s.api_addr().unwrap();
    let codes: Vec<u16> = (0..5)
        .map(|_| get(at, "/v4/butlerping").unwrap().0)
        .collect();
    assert_eq!(codes, [200, 200, 200, 429, 429]);
    assert_eq!(s.stats().limited, 2);
    assert_eq!(s.stats().api, 5);
}

#[test]
fn health_is_on_loopback_with_fastify_healthchecks_body() {
    let s = local(Options {
        health_port: Some(0),
        ..Options::default()
    });
    let at = s.health_addr().unwrap();
    assert!(at.ip().is_loopback());
    let (code, _, body) = get(at, "/health").unwrap();
    assert_eq!((code, body.as_str()), (200, HEALTH_BODY));
    assert_eq!(get(at, "/other").unwrap().0, 404);
}

#[test]
fn silent_refuses_connections_and_answer_brings_it_back() {
    let s = local(Options::default());
    let at = s.api_addr().unwrap();
    s.silence();
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(at, "/v4/butlerping").is_ok() {
        assert!(Instant::now() < deadline, "still answering while silent");
        thread::sleep(POLL);
    }
    s.answer();
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(at, "/v4/butlerping").map(|r| r.0).ok() != Some(200) {
        assert!(Instant::now() < deadline, "did not come back");
        thread::sleep(POLL);
    }
}

#[test]
fn a_late_start_answers_nothing_until_the_delay_is_over() {
    let s = local(Options {
        startup_delay: Duration::from_millis(600),
        ..Options::default()
    });
    thread::sleep(Duration::from_millis(50));
    assert!(get(s.api_addr().unwrap(), "/v4/butlerping").is_err());
    thread::sleep(Duration::from_millis(800));
    assert_eq!(get(s.api_addr().unwrap(), "/v4/butlerping").unwrap().0, 200);
}

#[test]
fn control_commands_change_the_running_stand_in() {
    let s = Standin::start(Options {
        api: Some("127.0.0.1:0".parse().unwrap()),
        control: Some("127.0.0.1:0".parse().unwrap()),
        ..Options::default()
    })
    .unwrap();
    let c = s.control_addr().unwrap();
    assert_eq!(control(c, "version 6.1.0").unwrap(), "ok version 6.1.0");
    assert_eq!(control(c, "fault html").unwrap(), "ok fault html");
    assert!(control(c, "fault nonsense").unwrap().starts_with("error"));
    let (_, head, _) = get(s.api_addr().unwrap(), "/v4/butlerping").unwrap();
    assert!(head.contains("text/html"));
    control(c, "fault none").unwrap();
    let (_, _, body) = get(s.api_addr().unwrap(), "/v4/butlerping").unwrap();
    assert!(body.contains(r#""butlerVersion":"6.1.0""#), "{body}");
    assert_eq!(
        control(c, "stats").unwrap().parse::<Stats>().unwrap().api,
        2
    );
}

#[test]
fn the_control_port_refuses_other_than_loopback() {
    let e = Standin::start(Options {
        api: None,
        control: Some("0.0.0.0:0".parse().unwrap()),
        ..Options::default()
    });
    assert!(e.is_err());
}
