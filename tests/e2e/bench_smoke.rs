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
    ]);
    assert_eq!(v["opened"], 50, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
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
