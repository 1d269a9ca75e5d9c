//! The voice benchmark's own parts (`loadtest/voice-bench.sh` drives them with sipp):
//!
//! - `voice-rtp`: the calls' audio at both ends. It binds `--calls` caller-side and as many
//!   agent-side UDP sockets, writes sipp's injection files with their ports (the callers'
//!   SDP and the agents' phone's SDP name them), and on every socket sends a G.711 µ-law
//!   packet every 20 ms (50/s, one direction of a call) to the address it learns from the
//!   first packet it receives (media's treatment on the caller's side, the caller's relayed
//!   audio on the agent's), or to a fixed peer (`--peers`, for the raw relay). Each payload
//!   carries a magic, the sending socket, a sequence number and its send time, so the
//!   receiving socket (the same process, one clock) counts what arrived of what was sent,
//!   and measures the one-way transit through the relay and its variation. Once every call
//!   has audio both ways (or `--ready-seconds` passed) and `--settle-seconds` more, it
//!   counts for `--window-seconds`: packets sent in the window vs those of them received
//!   (until `--grace-ms` after it), transit p50/p99, delay variation p99 (each packet's
//!   transit over its flow's fastest), and the CPU (`/proc/<pid>/stat`) and RSS of the
//!   processes named by `--watch`. With `--answers` (the agents' phone's log of when it
//!   answered each port's call) it also gives agent answer → first audio.
//! - `udp-relay`: the machine's own limit for the same traffic: `--calls` pairs of UDP
//!   sockets, each packet checked as RTP version 2 and sent to the other socket's latched
//!   peer, one task per call as media's relay does, with no SIP and no rewriting.
//! - `voice-agents`: the benchmark's tenant (numbers, one queue, one fixed phone per agent
//!   at the agents' sipp) published on the tenants topic, and its agents signed in.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use centralita_platform::auth::Role;
use centralita_platform::bus::Topics;
use centralita_proto::sessions::v1 as pb;
use centralita_proto::tenancy::v1 as tpb;
use hdrhistogram::Histogram;
use pb::agent_service_client::AgentServiceClient;
use tokio::net::UdpSocket;
use tonic::transport::Endpoint;

use crate::{publish_tenants, req, Auth, StackArgs};

/// What marks the benchmark's own payloads (media's treatment does not carry it).
const MAGIC: [u8; 4] = *b"CTLB";
/// G.711 at 8 kHz: 160 bytes every 20 ms.
const FRAME: usize = 160;
const RTP_HEADER: usize = 12;
const PACKET_INTERVAL: Duration = Duration::from_millis(20);

/// The fields our payload carries in front of µ-law silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The sending socket.
    pub stream: u32,
    pub seq: u32,
    /// Microseconds since the generator started.
    pub sent_us: u64,
}

/// One RTP packet (PCMU, 20 ms) carrying `stamp`.
pub fn packet(stamp: Stamp, ssrc: u32) -> [u8; RTP_HEADER + FRAME] {
    let mut p = [0xFFu8; RTP_HEADER + FRAME];
    p[0] = 0x80;
    p[1] = 0; // PCMU
    p[2..4].copy_from_slice(&(stamp.seq as u16).to_be_bytes());
    p[4..8].copy_from_slice(&stamp.seq.wrapping_mul(FRAME as u32).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    let b = &mut p[RTP_HEADER..];
    b[0..4].copy_from_slice(&MAGIC);
    b[4..8].copy_from_slice(&stamp.stream.to_be_bytes());
    b[8..12].copy_from_slice(&stamp.seq.to_be_bytes());
    b[12..20].copy_from_slice(&stamp.sent_us.to_be_bytes());
    p
}

/// What a received datagram is: ours (with its stamp), other RTP (treatment), or not RTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    Ours(Stamp),
    OtherRtp,
    NotRtp,
}

pub fn read(datagram: &[u8]) -> Received {
    if datagram.len() < RTP_HEADER || datagram[0] >> 6 != 2 {
        return Received::NotRtp;
    }
    let start = RTP_HEADER + 4 * usize::from(datagram[0] & 0x0F);
    let Some(b) = datagram.get(start..) else { return Received::NotRtp };
    if b.len() < 20 || b[0..4] != MAGIC {
        return Received::OtherRtp;
    }
    let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut sent = [0u8; 8];
    sent.copy_from_slice(&b[12..20]);
    Received::Ours(Stamp { stream: u32_at(4), seq: u32_at(8), sent_us: u64::from_be_bytes(sent) })
}

/// The measuring window, in the generator's microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from_us: u64,
    pub to_us: u64,
}

impl Window {
    pub fn holds(&self, us: u64) -> bool {
        (self.from_us..self.to_us).contains(&us)
    }
}

/// What one socket received from its peer's stream.
#[derive(Debug, Default)]
pub struct Flow {
    /// The fastest transit seen (the flow's base delay).
    min_transit_us: Option<u64>,
    last_seq: Option<u32>,
    pub received_in_window: u64,
    pub out_of_order: u64,
}

/// Everything the window measured, over all sockets.
#[derive(Debug)]
pub struct Tally {
    /// Packets due in the window (on the 20 ms schedule), whether the kernel took them or not.
    pub sent_in_window: u64,
    /// Of those, refused by the kernel (the sending socket's buffer full).
    pub send_refused: u64,
    pub received_in_window: u64,
    pub out_of_order: u64,
    /// One-way transit through the relay (send → receive), µs.
    pub transit: Histogram<u64>,
    /// Each packet's transit over its flow's fastest (delay variation), µs.
    pub variation: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            sent_in_window: 0,
            send_refused: 0,
            received_in_window: 0,
            out_of_order: 0,
            transit: crate::histogram(),
            variation: crate::histogram(),
        }
    }
}

impl Tally {
    /// A packet of ours received at `now_us` on `flow`: counted if sent in `window`.
    pub fn receive(&mut self, flow: &mut Flow, stamp: Stamp, now_us: u64, window: Option<Window>) {
        let transit = now_us.saturating_sub(stamp.sent_us);
        let base = *flow.min_transit_us.get_or_insert(transit);
        let base = base.min(transit);
        flow.min_transit_us = Some(base);
        let in_order = flow.last_seq.is_none_or(|l| stamp.seq > l);
        if in_order {
            flow.last_seq = Some(stamp.seq);
        }
        if window.is_some_and(|w| w.holds(stamp.sent_us)) {
            flow.received_in_window += 1;
            self.received_in_window += 1;
            if !in_order {
                flow.out_of_order += 1;
                self.out_of_order += 1;
            }
            let _ = self.transit.record(transit.max(1));
            let _ = self.variation.record((transit - base).max(1));
        }
    }

    pub fn lost(&self) -> u64 {
        self.sent_in_window.saturating_sub(self.received_in_window)
    }
}

/// CPU time (user + system) of a process in clock ticks, from `/proc/<pid>/stat`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces: fields are counted after its `)`.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After `)`: state is field 3, utime field 14, stime field 15 → indexes 11 and 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Resident memory in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// `name=pid` pairs.
fn watched(list: &[String]) -> anyhow::Result<Vec<(String, u32)>> {
    list.iter()
        .map(|w| {
            let (name, pid) = w.split_once('=').with_context(|| format!("--watch `{w}`: expected name=pid"))?;
            let pid: u32 = pid.trim().parse().with_context(|| format!("--watch `{w}`: `{pid}` is not a pid"))?;
            Ok((name.trim().to_owned(), pid))
        })
        .collect()
}

fn proc_ticks(pid: u32) -> Option<u64> {
    cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn proc_rss(pid: u32) -> Option<u64> {
    rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The kernel's clock ticks per second (USER_HZ): 100 on Linux, which `getconf CLK_TCK`
/// confirms; `/proc` reports CPU time in them.
const TICKS_PER_SECOND: f64 = 100.0;

/// The agents' phone's answer log: lines `ANSWER <rtp port> <unix seconds.micros>`.
pub fn answers(text: &str) -> HashMap<u16, f64> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().skip_while(|w| *w != "ANSWER").skip(1);
            let port = w.next()?.parse().ok()?;
            let at = w.next()?.parse::<f64>().ok()?;
            Some((port, at))
        })
        .collect()
}

#[derive(Debug, clap::Args)]
pub struct RtpArgs {
    /// Calls: one caller-side and one agent-side socket each.
    #[arg(long)]
    calls: usize,
    /// Where sipp's injection files go: `callers.csv` (port;called number;caller number)
    /// and `agents.csv` (port).
    #[arg(long)]
    csv_dir: PathBuf,
    /// The numbers called, spread over the calls.
    #[arg(long, value_delimiter = ',', default_value = "+34910000000")]
    numbers: Vec<String>,
    /// Fixed peers instead of learning them (the raw relay's `udp-relay --pairs` file):
    /// caller socket i sends to line i's first port, agent socket i to its second.
    #[arg(long)]
    peers: Option<PathBuf>,
    /// How long to wait for every call to have audio both ways.
    #[arg(long, default_value_t = 120)]
    ready_seconds: u64,
    #[arg(long, default_value_t = 3)]
    settle_seconds: u64,
    /// 0 measures no window: only which calls had audio both ways, and answer → audio.
    #[arg(long, default_value_t = 30)]
    window_seconds: u64,
    /// How long after the window packets sent in it may still arrive.
    #[arg(long, default_value_t = 500)]
    grace_ms: u64,
    /// Processes whose CPU and RSS are measured over the window: `name=pid`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    watch: Vec<String>,
    /// A file of more `name=pid` lines, read when the window starts (for processes started
    /// after this one: sipp, which needs the injection files first).
    #[arg(long)]
    watch_file: Option<PathBuf>,
    /// The agents' phone's answer log (sipp `-trace_logs`), read once the window is over.
    #[arg(long)]
    answers: Option<PathBuf>,
    /// Where to write the JSON result (stdout when absent).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One socket of the generator.
struct Socket {
    socket: UdpSocket,
    /// Where this socket sends: learned or fixed.
    to: Option<SocketAddr>,
    fixed: bool,
    seq: u32,
    ssrc: u32,
    flow: Flow,
    /// When (unix µs) the first packet of ours arrived: the other party's first audio.
    first_ours_unix_us: Option<u64>,
    /// When (unix µs) the first RTP packet arrived (on a caller's socket: media's answer
    /// with the queue's treatment).
    first_any_unix_us: Option<u64>,
    /// Heard the other party when the window opened: only such calls are counted in it (a
    /// caller still queued sends to media, which relays nothing until an agent answers).
    counted: bool,
    sent_in_window: u64,
}

struct Gen {
    started: Instant,
    sockets: Vec<Socket>,
    tally: Tally,
    window: Option<Window>,
}

impl Gen {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }
}

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn read_pairs(path: &Path) -> anyhow::Result<Vec<(SocketAddr, SocketAddr)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let mut w = l.split_whitespace();
            let mut next = || -> anyhow::Result<SocketAddr> {
                w.next()
                    .with_context(|| format!("{} line {}: two addresses expected", path.display(), i + 1))?
                    .parse()
                    .with_context(|| format!("{} line {}: not an address", path.display(), i + 1))
            };
            Ok((next()?, next()?))
        })
        .collect()
}

pub fn rtp(args: RtpArgs) -> anyhow::Result<()> {
    if args.calls == 0 || args.numbers.is_empty() {
        bail!("--calls and --numbers must not be empty or zero");
    }
    let watch = watched(&args.watch)?;
    let peers = args.peers.as_deref().map(read_pairs).transpose()?;
    if let Some(p) = &peers {
        if p.len() < args.calls {
            bail!("--peers has {} pairs for {} calls", p.len(), args.calls);
        }
    }
    // One thread: the generator's cost is one core at most, and is measured.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, generate(args, watch, peers))
}

async fn generate(
    args: RtpArgs,
    watch: Vec<(String, u32)>,
    peers: Option<Vec<(SocketAddr, SocketAddr)>>,
) -> anyhow::Result<()> {
    let n = args.calls;
    let mut sockets = Vec::with_capacity(2 * n);
    for i in 0..2 * n {
        let socket = UdpSocket::bind("127.0.0.1:0").await.context("binding an RTP socket (ulimit -n?)")?;
        let to = peers.as_ref().map(|p| if i < n { p[i].0 } else { p[i - n].1 });
        sockets.push(Socket {
            socket,
            to,
            fixed: to.is_some(),
            seq: 0,
            ssrc: 0x5EED_0000 ^ i as u32,
            flow: Flow::default(),
            first_ours_unix_us: None,
            first_any_unix_us: None,
            counted: false,
            sent_in_window: 0,
        });
    }
    std::fs::create_dir_all(&args.csv_dir)?;
    let port = |s: &Socket| s.socket.local_addr().map(|a| a.port());
    let mut callers = String::from("SEQUENTIAL\n");
    let mut agents = String::from("SEQUENTIAL\n");
    for i in 0..n {
        let number = &args.numbers[i % args.numbers.len()];
        callers.push_str(&format!("{};{number};+346{:08}\n", port(&sockets[i])?, i));
        agents.push_str(&format!("{}\n", port(&sockets[n + i])?));
    }
    // The agents' file first: the script starts sipp once the callers' exists.
    std::fs::write(args.csv_dir.join("agents.csv"), agents)?;
    std::fs::write(args.csv_dir.join("callers.csv"), callers)?;

    let gen = Rc::new(RefCell::new(Gen { started: Instant::now(), sockets, tally: Tally::default(), window: None }));
    for i in 0..2 * n {
        tokio::task::spawn_local(receive(gen.clone(), i));
    }
    tokio::task::spawn_local(send(gen.clone()));

    // Wait for audio both ways on every call.
    let ready_deadline = Instant::now() + Duration::from_secs(args.ready_seconds);
    let mut last_report = Instant::now();
    let flowing = |g: &Gen| g.sockets.iter().filter(|s| s.first_ours_unix_us.is_some()).count();
    loop {
        let f = flowing(&gen.borrow());
        if f == 2 * n {
            eprintln!("[voice-rtp] all {n} calls have audio both ways");
            break;
        }
        if Instant::now() > ready_deadline {
            eprintln!("[voice-rtp] after {} s only {f} of {} sockets hear the other party", args.ready_seconds, 2 * n);
            break;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("[voice-rtp] {f} of {} sockets hear the other party", 2 * n);
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bridged = flowing(&gen.borrow()) / 2;
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;

    // The window.
    let mut watch = watch;
    if let Some(path) = &args.watch_file {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect();
        watch.extend(watched(&lines)?);
    }
    let before: Vec<Option<u64>> = watch.iter().map(|(_, pid)| proc_ticks(*pid)).collect();
    let self_before = proc_ticks(std::process::id());
    let wall = Instant::now();
    let uptime_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    {
        let mut g = gen.borrow_mut();
        for s in g.sockets.iter_mut() {
            s.counted = s.first_ours_unix_us.is_some();
        }
        let from_us = g.now_us();
        g.window = Some(Window { from_us, to_us: from_us + args.window_seconds * 1_000_000 });
    }
    tokio::time::sleep(Duration::from_secs(args.window_seconds)).await;
    let seconds = wall.elapsed().as_secs_f64();
    let after: Vec<Option<u64>> = watch.iter().map(|(_, pid)| proc_ticks(*pid)).collect();
    let self_after = proc_ticks(std::process::id());
    let rss: Vec<Option<u64>> = watch.iter().map(|(_, pid)| proc_rss(*pid)).collect();
    tokio::time::sleep(Duration::from_millis(args.grace_ms)).await;

    let g = gen.borrow();
    let t = &g.tally;
    let cpu = |b: Option<u64>, a: Option<u64>| {
        b.zip(a).map(|(b, a)| ((a.saturating_sub(b)) as f64 / TICKS_PER_SECOND / seconds * 1000.0).round() / 10.0)
    };
    let mut processes = serde_json::Map::new();
    for (i, (name, pid)) in watch.iter().enumerate() {
        let pct = cpu(before[i], after[i]);
        processes.insert(
            name.clone(),
            serde_json::json!({
                "pid": pid,
                "cpu_percent_of_one_core": pct,
                "cpu_ms_per_call_second": pct.map(|p| (p * 10.0 / bridged.max(1) as f64 * 1000.0).round() / 1000.0),
                "rss_mib": rss[i].map(|k| (k as f64 / 102.4).round() / 10.0),
            }),
        );
    }
    processes
        .insert("generator".into(), serde_json::json!({ "cpu_percent_of_one_core": cpu(self_before, self_after) }));
    let answer_to_audio = match &args.answers {
        Some(path) => {
            let log = std::fs::read_to_string(path).unwrap_or_default();
            let answered = answers(&log);
            let mut h = crate::histogram();
            for s in &g.sockets[n..] {
                let (Ok(addr), Some(first)) = (s.socket.local_addr(), s.first_ours_unix_us) else { continue };
                if let Some(at) = answered.get(&addr.port()) {
                    let at_us = (at * 1e6) as u64;
                    let _ = h.record(first.saturating_sub(at_us).max(1));
                }
            }
            Some(crate::quantiles(&h))
        }
        None => None,
    };
    // On each caller's socket: media's answer (treatment) → the agent's first audio.
    let mut queued = crate::histogram();
    for s in &g.sockets[..n] {
        if let (Some(any), Some(ours)) = (s.first_any_unix_us, s.first_ours_unix_us) {
            let _ = queued.record(ours.saturating_sub(any).max(1));
        }
    }
    let counted_calls = g.sockets[..n].iter().filter(|s| s.counted).count();
    let ms = |h: &Histogram<u64>, q: f64| (h.value_at_quantile(q) as f64 / 10.0).round() / 100.0;
    let loss_pct = if t.sent_in_window == 0 { None } else { Some(t.lost() as f64 * 100.0 / t.sent_in_window as f64) };
    let result = serde_json::json!({
        "calls": n,
        "calls_with_audio_both_ways": bridged,
        "calls_counted_in_window": counted_calls,
        "caller_answered_to_agent_audio_ms": if args.peers.is_none() { Some(crate::quantiles(&queued)) } else { None },
        "window_seconds": seconds,
        "packets_sent_in_window": t.sent_in_window,
        "packets_received_of_those": t.received_in_window,
        "packets_lost": t.lost(),
        "packets_refused_by_the_sending_socket": t.send_refused,
        "loss_percent": loss_pct,
        "out_of_order": t.out_of_order,
        "packets_per_second_each_way_per_call": t.sent_in_window as f64 / seconds / (2 * counted_calls.max(1)) as f64,
        "transit_ms": { "p50": ms(&t.transit, 0.5), "p99": ms(&t.transit, 0.99), "p99_9": ms(&t.transit, 0.999), "max": ms(&t.transit, 1.0) },
        "delay_variation_ms": { "p50": ms(&t.variation, 0.5), "p99": ms(&t.variation, 0.99), "p99_9": ms(&t.variation, 0.999), "max": ms(&t.variation, 1.0) },
        "agent_answer_to_first_audio_ms": answer_to_audio,
        "processes": processes,
        "loadavg_before": uptime_before.trim(),
        "loadavg_after": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    eprintln!(
        "[voice-rtp] {bridged}/{n} calls, {:.1} s: sent {} received {} lost {} ({} %), transit p50 {} p99 {} ms, delay variation p99 {} ms",
        seconds,
        t.sent_in_window,
        t.received_in_window,
        t.lost(),
        loss_pct.map_or_else(|| "no window".to_owned(), |l| format!("{l:.4}")),
        ms(&t.transit, 0.5),
        ms(&t.transit, 0.99),
        ms(&t.variation, 0.99),
    );
    let text = serde_json::to_string_pretty(&result)?;
    match &args.json {
        Some(path) => std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?,
        None => println!("{text}"),
    }
    Ok(())
}

async fn receive(gen: Rc<RefCell<Gen>>, i: usize) {
    let mut buf = [0u8; 2048];
    // Each receive task owns a second handle on its socket (a dup of the descriptor), so it
    // can await readiness without holding the shared state.
    let socket = {
        let g = gen.borrow();
        let std_socket = match dup(&g.sockets[i].socket) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("[voice-rtp] socket {i}: {e}");
                return;
            }
        };
        match UdpSocket::from_std(std_socket) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("[voice-rtp] socket {i}: {e}");
                return;
            }
        }
    };
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else { continue };
        let mut g = gen.borrow_mut();
        let now_us = g.now_us();
        let window = g.window;
        let Gen { sockets, tally, .. } = &mut *g;
        let s = &mut sockets[i];
        let what = read(&buf[..len]);
        if what == Received::NotRtp {
            continue;
        }
        if !s.fixed && s.to != Some(from) {
            // A new call on this port, or media's first packet: send there from now on.
            s.to = Some(from);
        }
        s.first_any_unix_us.get_or_insert_with(unix_us);
        if let Received::Ours(stamp) = what {
            s.first_ours_unix_us.get_or_insert_with(unix_us);
            let counted = sockets.get(stamp.stream as usize).is_some_and(|sender| sender.counted);
            let s = &mut sockets[i];
            tally.receive(&mut s.flow, stamp, now_us, window.filter(|_| counted));
        }
    }
}

fn dup(socket: &UdpSocket) -> std::io::Result<std::net::UdpSocket> {
    use std::os::fd::{AsFd, OwnedFd};
    let owned: OwnedFd = socket.as_fd().try_clone_to_owned()?;
    Ok(std::net::UdpSocket::from(owned))
}

/// Every socket with somewhere to send sends a packet every 20 ms, the sockets spread over
/// the 20 ms in 1 ms slots so the load is even.
async fn send(gen: Rc<RefCell<Gen>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let slots = PACKET_INTERVAL.as_millis() as usize;
    let mut slot = 0usize;
    loop {
        tick.tick().await;
        let mut g = gen.borrow_mut();
        let now_us = g.now_us();
        let window = g.window;
        let total = g.sockets.len();
        let Gen { sockets, tally, .. } = &mut *g;
        let mut i = slot;
        while i < total {
            let s = &mut sockets[i];
            if let Some(to) = s.to {
                let p = packet(Stamp { stream: i as u32, seq: s.seq, sent_us: now_us }, s.ssrc);
                // Every packet due is counted: one the kernel refuses (the socket's buffer
                // full because the relay does not read its side fast enough) is lost.
                let sent = s.socket.try_send_to(&p, to).is_ok();
                s.seq = s.seq.wrapping_add(1);
                if s.counted && window.is_some_and(|w| w.holds(now_us)) {
                    s.sent_in_window += 1;
                    tally.sent_in_window += 1;
                    if !sent {
                        tally.send_refused += 1;
                    }
                }
            }
            i += slots;
        }
        slot = (slot + 1) % slots;
    }
}

#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    #[arg(long)]
    calls: usize,
    /// Where the pairs of relay addresses go, one call a line: `<caller side> <agent side>`.
    #[arg(long)]
    pairs: PathBuf,
    /// Worker threads (media runs the platform's multi-threaded runtime).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

pub fn relay(args: RelayArgs) -> anyhow::Result<()> {
    if args.calls == 0 || args.threads == 0 {
        bail!("--calls and --threads must be positive");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()?;
    rt.block_on(async move {
        let mut lines = String::new();
        let mut calls = Vec::with_capacity(args.calls);
        for _ in 0..args.calls {
            let a = UdpSocket::bind("127.0.0.1:0").await.context("binding a relay socket (ulimit -n?)")?;
            let b = UdpSocket::bind("127.0.0.1:0").await.context("binding a relay socket (ulimit -n?)")?;
            lines.push_str(&format!("{} {}\n", a.local_addr()?, b.local_addr()?));
            calls.push((a, b));
        }
        let tmp = args.pairs.with_extension("tmp");
        std::fs::write(&tmp, lines)?;
        std::fs::rename(&tmp, &args.pairs)?;
        eprintln!("[udp-relay] {} calls relaying (pairs in {})", args.calls, args.pairs.display());
        for (a, b) in calls {
            tokio::spawn(relay_call(a, b));
        }
        tokio::signal::ctrl_c().await?;
        anyhow::Ok(())
    })
}

/// Whether a datagram passes as media's relay lets it: RTP version 2, PCMU.
fn passes(datagram: &[u8]) -> bool {
    datagram.len() >= RTP_HEADER && datagram[0] >> 6 == 2 && datagram[1] & 0x7F == 0
}

/// One call: each side latched on its first valid packet's source, each packet sent on to
/// the other side's latched peer.
async fn relay_call(a: UdpSocket, b: UdpSocket) {
    let (mut peer_a, mut peer_b): (Option<SocketAddr>, Option<SocketAddr>) = (None, None);
    let mut buf_a = [0u8; 2048];
    let mut buf_b = [0u8; 2048];
    loop {
        tokio::select! {
            r = a.recv_from(&mut buf_a) => {
                let Ok((n, from)) = r else { continue };
                if peer_a.is_some_and(|p| p != from) || !passes(&buf_a[..n]) { continue }
                peer_a = Some(from);
                if let Some(to) = peer_b { let _ = b.send_to(&buf_a[..n], to).await; }
            }
            r = b.recv_from(&mut buf_b) => {
                let Ok((n, from)) = r else { continue };
                if peer_b.is_some_and(|p| p != from) || !passes(&buf_b[..n]) { continue }
                peer_b = Some(from);
                if let Some(to) = peer_a { let _ = a.send_to(&buf_b[..n], to).await; }
            }
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct AgentsArgs {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    sessions: String,
    #[command(flatten)]
    stack: StackArgs,
    /// The tenant to create (its id).
    #[arg(long)]
    tenant: String,
    #[arg(long)]
    agents: usize,
    /// The numbers the tenant owns (all lead to its one queue).
    #[arg(long, value_delimiter = ',')]
    numbers: Vec<String>,
    /// The trunk's source address.
    #[arg(long, default_value = "127.0.0.1")]
    trunk_source: String,
    /// The agents' phone (one sipp answering every agent): `host:port`.
    #[arg(long)]
    phone: String,
    #[arg(long, default_value_t = 1)]
    after_contact_work_seconds: u32,
}

/// The benchmark tenant's manifest: `numbers` into queue `support`, agent `{tenant}-a{i}`'s
/// fixed phone `sip:{agent}@{phone}`.
pub fn tenant_manifest(tenant: &str, numbers: &[String], source: &str, phone: &str, agents: usize, acw: u32) -> String {
    let mut y = format!(
        "apiVersion: centralita.io/v1\nkind: Tenant\nmetadata: {{ name: {tenant} }}\nspec:\n  displayName: Voice bench {tenant}\n  \
         channels: [voice]\n  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}\n  \
         quotas: {{ maxConcurrentContacts: 100000, apiRequestsPerSecond: 100000 }}\n  \
         businessHours: {{ timeZone: UTC }}\n  dataRetentionDays: 30\n  recording: {{ voice: none }}\n  routing:\n    \
         dispositionCodes: [resolved]\n    queues:\n      - {{ id: support, offerTimeoutSeconds: 30, afterContactWorkSeconds: {acw} }}\n  \
         voice:\n    numbers:\n"
    );
    for n in numbers {
        y.push_str(&format!("      - {{ number: \"{n}\", queue: support }}\n"));
    }
    y.push_str(&format!("    trunks:\n      - {{ name: bench, sources: [\"{source}\"] }}\n    phones:\n"));
    for i in 0..agents {
        y.push_str(&format!("      - {{ agentId: {tenant}-a{i}, uri: \"sip:{tenant}-a{i}@{phone}\" }}\n"));
    }
    y
}

impl AgentsArgs {
    pub fn stack_key(&self) -> PathBuf {
        self.stack.private_key_file.clone()
    }
}

pub async fn agents(args: AgentsArgs, auth: Auth) -> anyhow::Result<()> {
    if args.agents == 0 || args.numbers.is_empty() {
        bail!("--agents and --numbers must not be empty");
    }
    let manifest = tenant_manifest(
        &args.tenant,
        &args.numbers,
        &args.trunk_source,
        &args.phone,
        args.agents,
        args.after_contact_work_seconds,
    );
    let topics = Topics::new(args.stack.topic_prefix.clone());
    publish_tenants(&args.stack.brokers, &topics, &[manifest]).await?;
    let channel = Endpoint::from_shared(args.sessions.clone())?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("the sessions service at {} is not reachable", args.sessions))?;
    let admin = auth.token(None, Role::BpoAdmin, None)?;
    let mut tenancy = tpb::tenant_service_client::TenantServiceClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let name = format!("tenants/{}", args.tenant);
    while tenancy.get_tenant(req(tpb::GetTenantRequest { name: name.clone() }, &admin)?).await.is_err() {
        if Instant::now() > deadline {
            bail!("sessions did not see tenant {} within 60 s", args.tenant);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = Instant::now();
    let mut setup = tokio::task::JoinSet::new();
    for i in 0..args.agents {
        let id = format!("{}-a{i}", args.tenant);
        let agent = pb::Agent {
            name: format!("agents/{id}"),
            display_name: id.clone(),
            queues: vec![pb::QueueAssignment { tenant: args.tenant.clone(), queue: "support".into() }],
            capacity: vec![pb::ChannelCapacity {
                channel: tpb::Channel::Voice as i32,
                max_contacts: 1,
                exclusive: true,
            }],
            ..Default::default()
        };
        let (admin, token) = (admin.clone(), auth.token(None, Role::Agent, Some(&id))?);
        let mut client = AgentServiceClient::new(channel.clone());
        setup.spawn(async move {
            // A sessions replica still loading the tenant set answers UNAVAILABLE: retried.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let upsert =
                    client.upsert_agent(req(pb::UpsertAgentRequest { agent: Some(agent.clone()) }, &admin)?).await;
                let result = match upsert {
                    Ok(_) => {
                        let sign_in = pb::SignInRequest { name: format!("agents/{id}"), available: true };
                        client.sign_in(req(sign_in, &token)?).await.map(|_| ())
                    }
                    Err(status) => Err(status),
                };
                match result {
                    Ok(()) => return anyhow::Ok(()),
                    Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(s) => bail!("agent {id}: {s}"),
                }
            }
        });
        if setup.len() >= 32 {
            if let Some(r) = setup.join_next().await {
                r??;
            }
        }
    }
    while let Some(r) = setup.join_next().await {
        r??;
    }
    eprintln!(
        "[voice-agents] tenant {} with {} numbers; {} agents signed in, available, in {:.1} s",
        args.tenant,
        args.numbers.len(),
        args.agents,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_the_packet_and_other_rtp_is_told_apart() {
        let stamp = Stamp { stream: 7, seq: 70_000, sent_us: 123_456_789 };
        let p = packet(stamp, 42);
        assert_eq!(p.len(), 172);
        assert_eq!(read(&p), Received::Ours(stamp));
        // A relay rewrites the header (SSRC, sequence, timestamp): the stamp is in the payload.
        let mut rewritten = p;
        rewritten[2..12].copy_from_slice(&[9; 10]);
        assert_eq!(read(&rewritten), Received::Ours(stamp));
        // With CSRCs the payload starts later.
        let mut with_csrc = vec![0x81, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xAA, 0xBB, 0xCC, 0xDD];
        with_csrc.extend_from_slice(&p[RTP_HEADER..]);
        assert_eq!(read(&with_csrc), Received::Ours(stamp));
        // Treatment (µ-law music) is RTP, not ours; garbage and RTCP-short packets are not RTP.
        let mut music = p;
        music[RTP_HEADER..RTP_HEADER + 4].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(read(&music), Received::OtherRtp);
        assert_eq!(read(b"hello"), Received::NotRtp);
        assert_eq!(read(&[0x40; 172]), Received::NotRtp, "version 1");
        assert_eq!(read(&[0x8F; 20]), Received::NotRtp, "CSRCs beyond the datagram");
    }

    #[test]
    fn the_window_counts_what_was_sent_in_it_and_the_variation_over_the_fastest() {
        let mut t = Tally::default();
        let mut flow = Flow::default();
        let w = Some(Window { from_us: 1_000, to_us: 2_000 });
        let stamp = |seq, sent_us| Stamp { stream: 1, seq, sent_us };
        t.receive(&mut flow, stamp(0, 500), 800, w); // before the window: base transit 300
        t.receive(&mut flow, stamp(1, 1_000), 1_400, w); // 400: 100 over the base
        t.receive(&mut flow, stamp(3, 1_500), 1_800, w); // 300
        t.receive(&mut flow, stamp(2, 1_400), 1_900, w); // late, out of order: 500
        t.receive(&mut flow, stamp(4, 2_000), 2_300, w); // sent after the window
        assert_eq!((t.received_in_window, flow.received_in_window, t.out_of_order), (3, 3, 1));
        assert_eq!(t.transit.len(), 3);
        assert_eq!(t.transit.max(), 500);
        assert!(t.variation.max() >= 199 && t.variation.max() <= 201, "500 - 300");
        t.sent_in_window = 4;
        assert_eq!(t.lost(), 1);
    }

    #[test]
    fn proc_files_are_read() {
        let stat = "1234 (centralita media) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 9 0 100 1000 200";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(rss_kib("Name:\tx\nVmRSS:\t  20480 kB\nVmSwap: 0 kB\n"), Some(20480));
        assert_eq!(rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn the_phones_answer_log_is_read_by_port() {
        let log = "2026-12-06\t00:10:00.000000\t1765000000.123456: ANSWER 40001 1765000000.123456\nnoise\nANSWER x 1\nANSWER 40002 1765000001.5\n";
        let a = answers(log);
        assert_eq!(a.len(), 2);
        assert!((a[&40001] - 1_765_000_000.123_456).abs() < 1e-3);
        assert!((a[&40002] - 1_765_000_001.5).abs() < 1e-6);
    }

    #[test]
    fn the_tenant_has_every_number_and_a_phone_per_agent() {
        let y = tenant_manifest(
            "vb-1",
            &["+34910000001".into(), "+34910000002".into()],
            "127.0.0.1",
            "127.0.0.1:18000",
            3,
            1,
        );
        let t =
            centralita_platform::tenant::TenantManifest::parse_all(&y, chrono::Utc::now()).expect("valid").remove(0);
        assert_eq!(t.voice.phones.len(), 3);
        assert_eq!(t.voice.phones.get("vb-1-a2").map(String::as_str), Some("sip:vb-1-a2@127.0.0.1:18000"));
        for n in ["+34910000001", "+34910000002"] {
            let number = centralita_platform::tenant::PhoneNumber::parse(n).expect("number");
            assert_eq!(t.voice.queue_of(&number), Some("support"));
        }
    }

    #[test]
    fn watch_pairs_and_peer_files_are_checked() {
        assert_eq!(watched(&["media=12".into()]).expect("valid"), vec![("media".to_owned(), 12)]);
        assert!(watched(&["media".into()]).is_err());
        assert!(watched(&["media=x".into()]).is_err());
        let dir = std::env::temp_dir().join(format!("vb-pairs-{}", std::process::id()));
        std::fs::write(&dir, "127.0.0.1:1000 127.0.0.1:1002\n\n").expect("write");
        assert_eq!(read_pairs(&dir).expect("valid").len(), 1);
        std::fs::write(&dir, "127.0.0.1:1000\n").expect("write");
        assert!(read_pairs(&dir).is_err());
        let _ = std::fs::remove_file(&dir);
    }

    #[tokio::test]
    async fn the_relay_latches_each_side_and_forwards_rtp_only() {
        let (a, b) =
            (UdpSocket::bind("127.0.0.1:0").await.expect("a"), UdpSocket::bind("127.0.0.1:0").await.expect("b"));
        let (a_addr, b_addr) = (a.local_addr().expect("a"), b.local_addr().expect("b"));
        tokio::spawn(relay_call(a, b));
        let caller = UdpSocket::bind("127.0.0.1:0").await.expect("caller");
        let agent = UdpSocket::bind("127.0.0.1:0").await.expect("agent");
        let intruder = UdpSocket::bind("127.0.0.1:0").await.expect("intruder");
        let p = packet(Stamp { stream: 1, seq: 1, sent_us: 1 }, 1);
        // The agent's packet latches b's side (a's is not known yet). The relay takes it
        // before the caller's packet is there too: with both waiting, select! may read a's
        // first, and the agent's packet then goes to the caller (the relay is right; the test
        // would be waiting for the wrong packet).
        agent.send_to(&p, b_addr).await.expect("send");
        tokio::time::sleep(Duration::from_millis(100)).await;
        caller.send_to(&p, a_addr).await.expect("send");
        let mut buf = [0u8; 2048];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), agent.recv_from(&mut buf))
            .await
            .expect("relayed")
            .expect("recv");
        assert_eq!(&buf[..n], &p[..]);
        agent.send_to(&p, b_addr).await.expect("send");
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), caller.recv_from(&mut buf))
            .await
            .expect("relayed")
            .expect("recv");
        assert_eq!(n, p.len());
        // Garbage, and packets from another source once latched, are not relayed.
        caller.send_to(b"garbage", a_addr).await.expect("send");
        intruder.send_to(&p, a_addr).await.expect("send");
        assert!(tokio::time::timeout(Duration::from_millis(300), agent.recv_from(&mut buf)).await.is_err());
    }
}
