//! CI-sized runs of `starling-bench` (seconds, small N), so the load generator keeps working:
//! each scenario on standalone, chat and room also on a 2-node cell. The full runs, and the
//! figures, are in docs/BENCHMARKS.md; here only correctness is asserted (nothing lost,
//! duplicated or refused), never a speed.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let bin = starling_e2e::starling_bin();
    let out = Command::new(env!("CARGO_BIN_EXE_starling-bench"))
        .arg("--bin")
        .arg(&bin)
        .arg("--json")
        .arg(&json)
        .args(args)
        .output()
        .expect("run starling-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "starling-bench {args:?} failed:\n{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{}:", args[0])),
        "summary table printed:\n{stdout}"
    );
    assert!(
        stderr.contains("s] "),
        "progress lines while it runs:\n{stderr}"
    );
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn assert_chat(v: &Value) {
    assert!(v["sent"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["acked"], v["sent"], "{v}");
    assert_eq!(v["delivered"], v["acked"], "{v}");
    for k in [
        "lost",
        "duplicated",
        "refused",
        "seq_anomalies",
        "sockets_closed_early",
    ] {
        assert_eq!(v[k], 0, "{k}: {v}");
    }
    assert!(v["latency_send_to_deliver"]["p50_ms"].as_f64().unwrap() > 0.0);
}

fn assert_room(v: &Value) {
    assert!(v["acked"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["acked"], v["sent"], "{v}");
    assert_eq!(v["delivered"], v["deliveries_expected"], "{v}");
    for k in ["missing", "duplicated", "refused", "sockets_closed_early"] {
        assert_eq!(v[k], 0, "{k}: {v}");
    }
}

/// Over two client processes (sources 127.0.0.2 and 127.0.0.3), whose handshake histograms
/// are merged.
#[test]
fn bench_idle_on_standalone() {
    let v = bench(&[
        "idle",
        "--connections",
        "50",
        "--settle",
        "0",
        "--hold",
        "1",
        "--procs",
        "2",
    ]);
    assert_eq!(v["opened"], 50, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(v["params"]["client_processes"], 2, "{v}");
    assert_eq!(v["handshake"]["count"], 50, "one histogram of both: {v}");
}

/// Every client drops and comes back within the window while messages keep coming: each
/// catches up by `sync` and ends with every seq of its conversation.
fn assert_storm(v: &Value, clients: u64, group: u64) {
    assert_eq!(v["opened"], clients, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    let s = &v["storm"];
    assert_eq!(s["back"], clients, "{v}");
    assert_eq!(s["synced"], clients, "{v}");
    assert_eq!(s["not_back"], 0, "{v}");
    assert_eq!(s["reconnect_handshake"]["count"], clients, "{v}");
    assert!(s["time_to_all_back_s"].as_f64().unwrap() > 0.0, "{v}");
    let m = &v["messages"];
    let acked = m["acked"].as_u64().unwrap();
    assert!(acked > 0, "{v}");
    assert_eq!(m["acked"], m["sent"], "{v}");
    assert_eq!(m["refused"], 0, "{v}");
    // Every message reaches every member of its group, by push or by sync.
    assert_eq!(m["deliveries_expected"], acked * group, "{v}");
    assert_eq!(
        m["pushed"].as_u64().unwrap() + m["recovered_by_sync"].as_u64().unwrap(),
        acked * group,
        "{v}"
    );
    assert!(
        m["recovered_by_sync"].as_u64().unwrap() > 0,
        "messages sent while clients were away come back by sync: {v}"
    );
    assert_eq!(m["lost"], 0, "{v}");
    assert_eq!(m["clients_not_back_or_not_synced"], 0, "{v}");
    assert_eq!(v["sockets_closed_early"], 0, "{v}");
}

#[test]
fn bench_reconnect_storm_on_standalone() {
    let v = bench(&[
        "storm",
        "--clients",
        "40",
        "--group-size",
        "4",
        "--window",
        "2",
        "--rate",
        "20",
        "--drain",
        "20",
        "--procs",
        "2",
    ]);
    assert_storm(&v, 40, 4);
}

#[test]
fn bench_reconnect_storm_on_a_cell() {
    let v = bench(&[
        "storm",
        "--clients",
        "30",
        "--group-size",
        "3",
        "--window",
        "2",
        "--rate",
        "20",
        "--drain",
        "30",
        "--procs",
        "2",
        "--cell",
        "2",
    ]);
    assert_eq!(v["server"]["gateways"].as_array().unwrap().len(), 2, "{v}");
    assert_storm(&v, 30, 3);
}

#[test]
fn bench_chat_and_room_on_standalone() {
    assert_chat(&bench(&[
        "chat",
        "--pairs",
        "5",
        "--rate",
        "50",
        "--duration",
        "2",
    ]));
    assert_room(&bench(&[
        "room",
        "--listeners",
        "30",
        "--senders",
        "2",
        "--rate",
        "10",
        "--duration",
        "2",
    ]));
}

/// 2 of 20 listeners stop reading: the node cuts them off (a small frame queue and a 1 s
/// heartbeat make it quick), and the 18 others still get everything.
#[test]
fn bench_room_with_slow_consumers_on_standalone() {
    let v = bench(&[
        "room",
        "--listeners",
        "20",
        "--slow-percent",
        "10",
        "--pad-bytes",
        "2000",
        "--senders",
        "2",
        "--rate",
        "10",
        "--duration",
        "6",
        "--server-env",
        "STARLING_GATEWAY__OUTBOUND_QUEUE=8",
        "--server-env",
        "STARLING_GATEWAY__HEARTBEAT_SECS=1",
    ]);
    assert_room(&v);
    assert_eq!(v["params"]["slow_listeners"], 2, "{v}");
    assert_eq!(v["slow_cut_off"], 2, "{v}");
}

#[test]
fn bench_chat_and_room_on_a_cell() {
    let v = bench(&[
        "chat",
        "--pairs",
        "5",
        "--rate",
        "50",
        "--duration",
        "2",
        "--cell",
        "2",
    ]);
    assert_eq!(v["server"]["gateways"].as_array().unwrap().len(), 2, "{v}");
    assert_chat(&v);
    assert_room(&bench(&[
        "room",
        "--listeners",
        "30",
        "--senders",
        "2",
        "--rate",
        "10",
        "--duration",
        "2",
        "--cell",
        "2",
    ]));
}
