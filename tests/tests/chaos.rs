//! The chaos suite: three replicas sharing Redis, each in front of an
//! upstream process of its own, behind a round-robin Service; clients
//! calling, streaming, sampling, receiving notifications, dropping and
//! resuming; and faults injected at random from a printed seed:
//!
//! - kill -9 of a replica (it comes back under the same name);
//! - a rolling SIGTERM of every replica;
//! - a Redis restart (with its data);
//! - an upstream restart (it forgets its sessions);
//! - an upstream stalled with SIGSTOP, then SIGCONT.
//!
//! Slow upstream calls (past the upstream timeout) and streams quiet for
//! longer than the retention are part of the workload.
//!
//! Invariants, asserted at the end:
//! - no request id is executed twice upstream (the upstreams' own logs);
//! - every call gets exactly one answer — a result or a JSON-RPC error — or,
//!   for a resumed stream, an explicit miss; none hangs past a deadline;
//!   no session is lost;
//! - a call answered with a result got every progress event once, in order;
//!   the standalone stream delivers each notification at most once, in order;
//! - each replica's memory stays under the sidecar's 256 MiB.
//!
//! About two and a half minutes by default; `SHADOWCAT_CHAOS_SECONDS` runs it
//! longer, and `SHADOWCAT_CHAOS_SEED` replays a run's fault schedule.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use shadowcat_tests::client::{Events, Mcp, json_body, text_body};
use shadowcat_tests::cluster::{Cluster, Options};
use shadowcat_tests::free_port;
use shadowcat_tests::procs::{RedisServer, UpstreamProc};
use shadowcat_tests::upstream::Seen;
use shadowcat_tests::workload::streamed_call;
use tokio::time::Instant;

const REPLICAS: usize = 3;
const CLIENTS: usize = 4;
/// A call not answered within this is a hang.
const CALL_DEADLINE: Duration = Duration::from_secs(60);
/// The sidecar's memory limit in the chart.
const MEMORY_LIMIT: u64 = 256 * 1024 * 1024;

/// What everyone records.
#[derive(Debug, Default)]
struct Record {
    outcomes: BTreeMap<String, usize>,
    faults: BTreeMap<&'static str, usize>,
    events: usize,
    resumes: usize,
    notifications_sent: usize,
    notifications_received: usize,
    standalone_misses: usize,
    /// Streams relayed without a log while Redis was away.
    unlogged: usize,
    max_rss: u64,
    violations: Vec<String>,
}

type Shared = Arc<Mutex<Record>>;

fn outcome(record: &Shared, what: impl Into<String>) {
    *record.lock().unwrap().outcomes.entry(what.into()).or_default() += 1;
}

/// Calls that did not end in a result so far.
fn failures(record: &Shared) -> usize {
    let r = record.lock().unwrap();
    r.outcomes
        .iter()
        .filter(|(k, _)| *k != "result")
        .map(|(_, n)| n)
        .sum()
}

fn violation(record: &Shared, what: String) {
    eprintln!("VIOLATION {what}");
    record.lock().unwrap().violations.push(what);
}

/// The upstream processes, restartable on their ports.
struct Upstreams {
    procs: Vec<Option<UpstreamProc>>,
    ports: Vec<u16>,
    logs: Vec<PathBuf>,
    generation: usize,
}

impl Upstreams {
    async fn start(dir: &Path) -> Upstreams {
        let mut up = Upstreams {
            procs: Vec::new(),
            ports: (0..REPLICAS).map(|_| free_port()).collect(),
            logs: (0..REPLICAS)
                .map(|i| dir.join(format!("upstream-{i}.log")))
                .collect(),
            generation: 0,
        };
        for i in 0..REPLICAS {
            let proc = up.spawn(i).await;
            up.procs.push(Some(proc));
        }
        up
    }

    async fn spawn(&mut self, i: usize) -> UpstreamProc {
        self.generation += 1;
        UpstreamProc::start(self.ports[i], &self.logs[i], &format!("u{i}g{}", self.generation)).await
    }

    async fn restart(&mut self, i: usize, down: Duration) {
        if let Some(mut proc) = self.procs[i].take() {
            proc.proc.child.kill().await.unwrap();
        }
        tokio::time::sleep(down).await;
        let proc = self.spawn(i).await;
        self.procs[i] = Some(proc);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_holds_every_invariant() {
    let seconds: u64 = std::env::var("SHADOWCAT_CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let seed: u64 = std::env::var("SHADOWCAT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("chaos: seed {seed}, {seconds} s (replay: SHADOWCAT_CHAOS_SEED={seed})");
    let dir = std::env::temp_dir().join(format!("shadowcat-chaos-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let mut upstreams = Upstreams::start(&dir).await;
    let urls = upstreams
        .procs
        .iter()
        .map(|p| p.as_ref().unwrap().url.clone())
        .collect();
    let options = Options {
        redis_dir: Some(dir.join("redis")),
        ..Default::default()
    };
    let extra = [
        "--upstream-timeout",
        "3s",
        "--sse-retention",
        "2s",
        "--sse-response-retention",
        "2s",
        "--drain-timeout",
        "5s",
        "--sse-keep-alive-interval",
        "1s",
    ];
    let mut cluster = Cluster::build(Vec::new(), urls, &extra, options).await;
    let record: Shared = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));

    let mut clients = Vec::new();
    for k in 0..CLIENTS {
        let (front, record, stop) = (cluster.front.url.clone(), record.clone(), stop.clone());
        clients.push(tokio::spawn(client(k, front, record, stop, seed)));
    }
    let sampler = {
        let (record, stop) = (record.clone(), stop.clone());
        let pids: Arc<Mutex<Vec<u32>>> = Arc::default();
        (pids.clone(), tokio::spawn(sample_memory(pids, record, stop)))
    };

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut rng = StdRng::seed_from_u64(seed);
    while Instant::now() < deadline {
        *sampler.0.lock().unwrap() = cluster
            .replicas
            .iter()
            .flatten()
            .filter_map(|r| r.proc.child.id())
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(2000..5000))).await;
        let fault = match rng.random_range(0..100) {
            0..25 => "kill -9 a replica",
            25..35 => "rolling SIGTERM",
            35..55 => "Redis restart",
            55..75 => "upstream restart",
            _ => "upstream SIGSTOP",
        };
        println!("chaos: {fault}");
        *record.lock().unwrap().faults.entry(fault).or_default() += 1;
        match fault {
            "kill -9 a replica" => {
                let i = rng.random_range(0..REPLICAS);
                cluster.kill(i).await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(300..2000))).await;
                cluster.start_replica(i).await;
            }
            "rolling SIGTERM" => {
                for i in 0..REPLICAS {
                    cluster.stop(i).await;
                    cluster.start_replica(i).await;
                }
            }
            "Redis restart" => {
                let port = cluster.redis.port;
                cluster.redis.proc.child.kill().await.unwrap();
                tokio::time::sleep(Duration::from_millis(rng.random_range(300..2000))).await;
                cluster.redis = RedisServer::start_on(port, Some(&dir.join("redis"))).await;
            }
            "upstream restart" => {
                let i = rng.random_range(0..REPLICAS);
                upstreams
                    .restart(i, Duration::from_millis(rng.random_range(100..1000)))
                    .await;
            }
            _ => {
                let i = rng.random_range(0..REPLICAS);
                let upstream = upstreams.procs[i].as_ref().unwrap();
                upstream.signal("-STOP");
                tokio::time::sleep(Duration::from_millis(rng.random_range(1000..4000))).await;
                upstream.signal("-CONT");
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    sampler.1.await.unwrap();

    let executed = executed_at_most_once(&upstreams.logs, &record);
    let record = record.lock().unwrap();
    if !record.violations.is_empty() {
        let logs = dir.join("replicas.log");
        std::fs::write(&logs, cluster.all_output()).unwrap();
        println!("chaos: replica logs kept in {}", logs.display());
    }
    if record.max_rss > MEMORY_LIMIT {
        println!("chaos: memory over the limit");
    }
    println!(
        "chaos: seed {seed}, {seconds} s, faults {:?}, calls {:?}, {} events, {} resumes, notifications {} put on a standalone stream / {} received, {} standalone misses, {} streams relayed without a log, max RSS {} MiB, {} violations",
        record.faults,
        record.outcomes,
        record.events,
        record.resumes,
        record.notifications_sent,
        record.notifications_received,
        record.standalone_misses,
        record.unlogged,
        record.max_rss / (1024 * 1024),
        record.violations.len()
    );
    assert!(record.max_rss > 0, "memory was sampled");
    assert!(record.max_rss <= MEMORY_LIMIT, "max RSS {} bytes", record.max_rss);
    let calls: usize = record.outcomes.values().sum();
    let results = record.outcomes.get("result").copied().unwrap_or(0);
    assert!(calls > 100, "too few calls to mean anything");
    assert!(
        results * 2 >= calls,
        "most calls get their result: {results} of {calls}"
    );
    assert!(
        executed >= results,
        "the upstream logs hold every call answered with a result ({executed} < {results})"
    );
    // A call breaks without an answer only when its replica is killed with
    // it in flight (the Service answers 502): at most one per client per
    // replica killed, three per rolling restart.
    let broke: usize = record
        .outcomes
        .iter()
        .filter(|(k, _)| k.starts_with("connection broke"))
        .map(|(_, n)| n)
        .sum();
    let kills = record.faults.get("kill -9 a replica").copied().unwrap_or(0)
        + REPLICAS * record.faults.get("rolling SIGTERM").copied().unwrap_or(0);
    assert!(
        broke <= CLIENTS * kills,
        "{broke} calls broke, with {kills} replicas killed or stopped"
    );
    assert_eq!(record.violations, Vec::<String>::new(), "seed {seed}");
    drop(record);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One client: a session, a standalone reader, and calls until told to stop.
async fn client(k: usize, front: String, record: Shared, stop: Arc<AtomicBool>, seed: u64) {
    let mut mcp = Mcp::new(&front, "2025-11-25");
    mcp.id_prefix = Some(format!("c{k}-"));
    loop {
        let body = mcp.request_body(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {"sampling": {}},
                   "clientInfo": {"name": format!("chaos-{k}"), "version": "0"}}),
        );
        if let Ok(response) = mcp.try_post(&body).await
            && response.status() == 200
        {
            mcp.session = Some(response.headers()["mcp-session-id"].to_str().unwrap().to_owned());
            json_body(response).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = mcp
        .try_post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    let mcp = Arc::new(mcp);
    let received: Arc<Mutex<Vec<u64>>> = Arc::default();
    let reader = tokio::spawn(standalone_reader(
        mcp.clone(),
        received.clone(),
        record.clone(),
        stop.clone(),
    ));
    let mut rng = StdRng::seed_from_u64(seed ^ (k as u64 + 1));
    let sent = AtomicU64::new(0);
    while !stop.load(Ordering::SeqCst) {
        let op = rng.random_range(0..100);
        let failed_before = failures(&record);
        let call = one_call(&mcp, op, &mut rng, &sent, &record);
        if tokio::time::timeout(CALL_DEADLINE, call).await.is_err() {
            violation(
                &record,
                format!("client {k}: a call hung past {CALL_DEADLINE:?} (op {op})"),
            );
        }
        if failures(&record) > failed_before {
            // A client backs off after a failure rather than spin on it.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    reader.await.unwrap();
    let received = received.lock().unwrap().clone();
    let mut sorted = received.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != received.len() || sorted != received {
        violation(
            &record,
            format!("client {k}: notifications out of order or twice: {received:?}"),
        );
    }
    let mut r = record.lock().unwrap();
    r.notifications_sent += usize::try_from(sent.load(Ordering::SeqCst)).unwrap();
    r.notifications_received += received.len();
}

/// One call of a kind `op` picks, classified.
async fn one_call(mcp: &Mcp, op: u32, rng: &mut StdRng, sent: &AtomicU64, record: &Shared) {
    match op {
        0..30 => drop(json_call(mcp, "echo", json!({}), record).await),
        30..40 => {
            // Some of these outlast the upstream timeout: a 504, run once.
            let ms = rng.random_range(100..4500);
            drop(json_call(mcp, "sleep", json!({"ms": ms}), record).await)
        }
        40..55 => {
            let n = sent.load(Ordering::SeqCst) + 1;
            let answer = json_call(mcp, "notify", json!({"text": n.to_string()}), record).await;
            // Counted when the upstream put it on a standalone stream.
            if answer.is_some_and(|a| a["result"]["content"][0]["text"] == "notified 1") {
                sent.store(n, Ordering::SeqCst);
            }
        }
        55..65 => stream_call(mcp, "sample", json!({}), 0, record).await,
        65..70 => {
            // Quiet for longer than the retention.
            stream_call(mcp, "stream", json!({"count": 1, "delay_ms": 2500}), 1, record).await
        }
        70..85 => stream_call(mcp, "stream", json!({"count": 3, "delay_ms": 30}), 3, record).await,
        _ => drop_and_resume(mcp, record).await,
    }
}

/// A call answered with JSON; its answer, when it has one.
async fn json_call(mcp: &Mcp, tool: &str, arguments: Value, record: &Shared) -> Option<Value> {
    let body = mcp.request_body("tools/call", json!({"name": tool, "arguments": arguments}));
    let response = match mcp.try_post(&body).await {
        Ok(response) => response,
        Err(_) => {
            outcome(record, "not sent (no replica listening)");
            return None;
        }
    };
    let status = response.status().as_u16();
    let text = text_body(response).await;
    let Ok(answer) = serde_json::from_str::<Value>(&text) else {
        not_json(status, &text, record);
        return None;
    };
    classify(mcp, &body, status, &answer, record);
    Some(answer)
}

/// What the Service answers when the replica it sent a request to died with
/// it: the only answer without a JSON-RPC body a call may get.
const FRONT_BROKE: &str = "backend connection broke";

/// An answer that is not JSON: the Service's 502 for a replica that died
/// with the request, or a violation.
fn not_json(status: u16, text: &str, record: &Shared) {
    if status == 502 && text == FRONT_BROKE {
        outcome(record, "connection broke (502 Bad Gateway)");
    } else {
        violation(record, format!("answered {status} without JSON: {text:?}"));
    }
}

/// Checks a JSON-RPC answer to `body` and records its outcome.
fn classify(mcp: &Mcp, body: &Value, status: u16, answer: &Value, record: &Shared) {
    if status == 404 {
        return violation(record, format!("session {:?} lost: {answer}", mcp.session));
    }
    if answer["id"] != body["id"] && !(status >= 400 && answer["id"].is_null()) {
        return violation(record, format!("answer {answer} to {}", body["id"]));
    }
    match (answer.get("result"), answer.get("error")) {
        (Some(_), None) => outcome(record, "result"),
        (None, Some(error)) => outcome(record, format!("error {status} {}", error["code"])),
        _ => violation(record, format!("not a JSON-RPC response: {answer}")),
    }
}

async fn stream_call(mcp: &Mcp, tool: &str, arguments: Value, progress: u64, record: &Shared) {
    let read = streamed_call(mcp, tool, arguments, 30).await;
    {
        let mut r = record.lock().unwrap();
        r.events += read.events.len();
        r.resumes += read.resumes;
    }
    let Some(answer) = read.answer() else {
        let failure = read.failure.clone().unwrap_or_default();
        return match () {
            _ if read.missed => outcome(record, "explicit miss"),
            _ if failure.starts_with("no answer") => outcome(record, "not sent (no replica listening)"),
            _ if read.status == 502 && failure.ends_with(&format!(": {FRONT_BROKE}")) => {
                outcome(record, "connection broke (502 Bad Gateway)")
            }
            _ if failure.contains("before any event") => {
                outcome(record, "connection broke (before its priming event)")
            }
            _ => violation(record, format!("{tool}: {failure}; read {:?}", read.events)),
        };
    };
    let answers = read.answer_count();
    if answers != 1 && read.status == 200 {
        violation(
            record,
            format!("{tool}: {answers} answers for one request: {:?}", read.events),
        );
    }
    if answer.get("result").is_some() && read.progress() != (1..=progress).collect::<Vec<_>>() {
        violation(
            record,
            format!("{tool}: result after progress {:?}", read.progress()),
        );
    }
    let body = json!({"id": read.request_id});
    classify(mcp, &body, read.status, answer, record);
}

/// A streamed call the client walks away from after the first event, then
/// resumes through the Service (another replica, as often as not).
async fn drop_and_resume(mcp: &Mcp, record: &Shared) {
    let body = mcp.request_body(
        "tools/call",
        json!({"name": "stream", "arguments": {"count": 3, "delay_ms": 50}}),
    );
    let Ok(response) = mcp.try_post(&body).await else {
        return outcome(record, "not sent (no replica listening)");
    };
    if response.status() != 200 {
        let status = response.status().as_u16();
        let text = text_body(response).await;
        return match serde_json::from_str::<Value>(&text) {
            Ok(answer) => classify(mcp, &body, status, &answer, record),
            Err(_) => not_json(status, &text, record),
        };
    }
    let mut events = Events::new(response);
    let first = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
    let Ok(Some(priming)) = first else {
        return outcome(record, "connection broke (before its priming event)");
    };
    if priming.id.is_none() {
        // Started while Redis was away: relayed without a log, so without
        // ids, and not resumable (as documented). Read it to its answer.
        let mut seen: Vec<Value> = priming
            .data
            .iter()
            .filter(|d| !d.is_empty())
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        seen.extend(events.rest().await.into_iter().map(|(_, m)| m));
        record.lock().unwrap().unlogged += 1;
        return match seen.iter().find(|m| m.get("id") == body.get("id")) {
            Some(answer) => classify(mcp, &body, 200, answer, record),
            None => violation(
                record,
                format!("unlogged stream ended without its answer: {seen:?}"),
            ),
        };
    }
    drop(events);
    record.lock().unwrap().resumes += 1;
    let mut seen = Vec::new();
    let mut last = priming.id.clone();
    for _ in 0..30 {
        let Some(id) = last.clone() else { break };
        let resumed = match mcp.try_get(Some(&id)).await {
            Ok(r) if r.status() == 200 => r,
            Ok(r) if r.status() == 410 => return outcome(record, "explicit miss"),
            _ => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let mut stream = Events::new(resumed);
        loop {
            let event = match stream.next_within(Duration::from_secs(30)).await {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(hung) => return violation(record, format!("resumed stream hung: {hung}; read {seen:?}")),
            };
            last = event.id.clone().or(last);
            let Some(data) = event.data.filter(|d| !d.is_empty()) else {
                continue;
            };
            let message: Value = serde_json::from_str(&data).unwrap();
            let done = message.get("id") == body.get("id");
            seen.push(message);
            if done {
                let progress: Vec<u64> = seen
                    .iter()
                    .filter_map(|m| m.pointer("/params/progress")?.as_u64())
                    .collect();
                let answer = seen.last().unwrap();
                if answer.get("result").is_some() && progress != [1, 2, 3] {
                    violation(
                        record,
                        format!("resumed stream: result after progress {progress:?}"),
                    );
                }
                record.lock().unwrap().events += seen.len();
                return classify(mcp, &body, 200, answer, record);
            }
        }
    }
    violation(record, format!("resumed stream never answered; read {seen:?}"))
}

/// Holds the session's standalone stream, resuming it after every break,
/// and notes each notification's number.
async fn standalone_reader(
    mcp: Arc<Mcp>,
    received: Arc<Mutex<Vec<u64>>>,
    record: Shared,
    stop: Arc<AtomicBool>,
) {
    let mut last: Option<String> = None;
    while !stop.load(Ordering::SeqCst) {
        let response = match mcp.try_get(last.as_deref()).await {
            Ok(response) => response,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        match response.status().as_u16() {
            200 => {}
            410 => {
                record.lock().unwrap().standalone_misses += 1;
                last = None;
                continue;
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        let mut events = Events::new(response);
        loop {
            let next = tokio::select! {
                next = events.next() => next,
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    if stop.load(Ordering::SeqCst) { return; }
                    continue;
                }
            };
            let Some(event) = next else { break };
            last = event.id.clone().or(last);
            let Some(data) = event.data.filter(|d| !d.is_empty()) else {
                continue;
            };
            let message: Value = serde_json::from_str(&data).unwrap();
            if let Some(n) = message
                .pointer("/params/data")
                .and_then(|d| d.as_str()?.parse().ok())
            {
                received.lock().unwrap().push(n);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sample_memory(pids: Arc<Mutex<Vec<u32>>>, record: Shared, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let pids = pids.lock().unwrap().clone();
        for pid in pids {
            // A process that just exited has no memory to count.
            let Some(rss) = shadowcat_tests::procs::rss_of(pid) else {
                continue;
            };
            let mut r = record.lock().unwrap();
            r.max_rss = r.max_rss.max(rss);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// No client request id was executed twice by the upstreams (across their
/// restarts: their logs are files).
fn executed_at_most_once(logs: &[PathBuf], record: &Shared) -> usize {
    let mut runs: HashMap<String, usize> = HashMap::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let seen: Seen = serde_json::from_str(line).unwrap();
            let Some(id) = seen.id.as_ref().and_then(Value::as_str) else {
                continue;
            };
            if seen.rejected || seen.rpc_method.is_none() || !id.starts_with('c') {
                continue;
            }
            *runs.entry(id.to_owned()).or_default() += 1;
        }
    }
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    if !twice.is_empty() {
        violation(record, format!("executed more than once upstream: {twice:?}"));
    }
    println!(
        "chaos: {} client requests executed upstream, each once",
        runs.len()
    );
    runs.len()
}
