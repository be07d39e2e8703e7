//! Robustness through the public surface: the sink's request parser on arbitrary bodies never
//! panics (bounded: a fixed number of cases), and a host with a huge address table is read in
//! linear time by the real binary. (Host detection's own robustness tests are unit tests of
//! `host`.)

use crate::common::copy_dir;

use std::path::Path;

use butler_agent::sink::capture;
use proptest::prelude::*;

fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn sink_request_parser_never_panics(body in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = capture::accept(&body, 1 << 20);
    }

    #[test]
    fn sink_request_parser_on_json_shaped_bodies(
        token in "(phc_[a-zA-Z0-9]{0,40}|phx_x|[ -~]{0,10})",
        event in "[ -~]{0,20}",
        distinct in "[ -~]{0,300}",
        uuid in "([0-9a-f-]{0,36})",
        batch in any::<bool>(),
    ) {
        let one = serde_json::json!({
            "api_key": token, "event": event, "distinct_id": distinct, "uuid": uuid,
            "properties": {"x": 1}
        });
        let body = if batch {
            serde_json::json!({"api_key": token, "batch": [one.clone(), one]})
        } else {
            one
        };
        let bytes = serde_json::to_vec(&body).unwrap();
        if let Ok(accepted) = capture::accept(&bytes, 1 << 20) {
            for a in accepted {
                prop_assert!(!a.distinct_id.is_empty());
                prop_assert!(!a.token.is_empty());
            }
        }
    }
}

/// A host with a huge local address table (a 4 MiB `fib_trie`, 134,834 addresses, just under
/// the host-file cap): `telemetry preview`, which reads it through the instance ID (the host's
/// init, `HOST_PROC/1/net/fib_trie`) and the privacy guard (the agent's own and the host's
/// tables), answers within a bound far above a normal run. A parser that deduplicates by
/// scanning its list took minutes here.
#[test]
fn a_four_mib_fib_trie_is_read_in_linear_time() {
    use std::fmt::Write as _;
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(20);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/docker-host-root/root"),
        &root,
    );
    // Every address once, then the table the host's init sees repeated: 10.0.0.0/8 is
    // eth0's connected route, so the ID looks for its address in the whole table.
    let mut fib = String::from("Local:\n  +-- 0.0.0.0/0 3 0 4\n");
    let mut count = 0u32;
    let mut entry = String::new();
    for n in 1u32.. {
        entry.clear();
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 | n);
        writeln!(entry, "|-- {ip}\n/32 host LOCAL").unwrap();
        if fib.len() + entry.len() > 4 * 1024 * 1024 {
            break;
        }
        fib.push_str(&entry);
        count += 1;
    }
    assert!(count > 130_000, "{count} addresses");
    let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                 eth0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n";
    write(&root, "proc/net/fib_trie", fib.as_bytes());
    write(&root, "host/proc/1/net/fib_trie", fib.as_bytes());
    write(&root, "host/proc/1/net/route", route.as_bytes());
    write(
        &root,
        "host/sys/class/net/eth0/address",
        b"02:00:0a:00:00:01\n",
    );

    let start = std::time::Instant::now();
    let mut child = crate::common::agent(crate::common::Telemetry::Off)
        .env("HOST_ROOT", "/host")
        .arg("--root")
        .arg(&root)
        .args(["telemetry", "preview", "--compact"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the agent binary runs");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the agent") {
            break status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("telemetry preview with {count} local addresses took over {LIMIT:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(status.success(), "{status}");
    let event: serde_json::Value = serde_json::from_str(&out).expect("the event as JSON");
    assert_eq!(event["event"], "telemetry sent");
    println!(
        "{count} local addresses: preview took {:?}",
        start.elapsed()
    );
}
