//! `RedisSentinel`: a private primary, its replica and three sentinels watching them,
//! for one test of `redis+sentinel://` and of failing the primary over, optionally with
//! the first sentinel cut off from the other two on the primary's side of a partition.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::eventually_blocking;
use super::ports;
use super::redis_cli::{cli, cli_script};

/// The master name the sentinels watch.
pub const MASTER_NAME: &str = "quorum";
/// Sentinels watching the primary.
const SENTINELS: usize = 3;
/// How long a sentinel waits for a node's answer before it holds the node down. Not
/// 1000: a sentinel reconnects at most once a second (to the dead primary, then to the
/// new one), so right after `+switch-master` its first answer from the new primary can
/// come a second late; with 1000 the new primary was once held down a second after
/// its promotion, at once objectively (the other sentinels' replies that the old one
/// was down still counted), and failed over again, onto the restarted, empty old
/// primary.
const DOWN_AFTER_MS: u32 = 2000;
/// A sentinel's `failover-timeout`: how long a failover may go on before it is given up,
/// and, doubled, how long before a sentinel tries the same primary again. Redis's default
/// (3 minutes) would hold a test up that long if a first attempt failed.
const FAILOVER_TIMEOUT_MS: u32 = 5000;
/// The user the cut-off sentinel of [`RedisSentinel::start_split`] reaches the data nodes
/// as (its password is the same): it may use no pub/sub channel, so it neither hears the
/// other sentinels' hello messages nor is heard in them, and it may not run `REPLICAOF`,
/// so it cannot turn the node the others promoted back into a replica.
const CUT_OFF_USER: &str = "cut-off";
/// How long a probe write waits (`WAIT`) for the replica to confirm it before
/// [`wait_streaming`] writes another.
const STREAMING_PROBE_MS: u32 = 2000;

/// One redis-server: a data node or a sentinel.
struct Process {
    port: u16,
    child: Option<Child>,
    /// Its own directory: its log, and a data node's files or a sentinel's config.
    dir: PathBuf,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    /// A data node, a replica of the node on that port if any.
    Data { replica_of: Option<u16> },
    /// A sentinel watching the primary on that port; `cut_off`: as [`CUT_OFF_USER`].
    Sentinel { primary: u16, cut_off: bool },
}

/// A primary and a replica on loopback ports, and three sentinels (quorum 2) that
/// know both and each other, so that a failover can happen.
pub struct RedisSentinel {
    /// The primary and the replica, in start order.
    data: [Process; 2],
    sentinels: Vec<Process>,
    dir: tempfile::TempDir,
}

impl RedisSentinel {
    /// One primary, one replica of it, three sentinels (quorum 2, down after
    /// [`DOWN_AFTER_MS`], failover timeout [`FAILOVER_TIMEOUT_MS`]). Returns once the
    /// replica streams from the primary and every sentinel knows the replica and the other
    /// two sentinels.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// [`Self::start`], but with the first sentinel cut off from the other two, on the
    /// primary's side of a partition that the hubs see across: it reaches the data nodes
    /// as [`CUT_OFF_USER`], so it never learns of the others nor they of it, and the
    /// primary refuses `REPLICAOF` to every client, as if the other two could not reach
    /// it. Once the other two fail the primary over (`SENTINEL FAILOVER` on one of
    /// them), the old primary goes on saying it is the primary and taking writes, and the
    /// cut-off sentinel goes on naming it, while the other two name the promoted replica.
    /// Returns once the replica streams from the primary, the other two sentinels know it
    /// and each other, and the cut-off one watches the primary and knows no other.
    pub fn start_split() -> Self {
        Self::start_with(true)
    }

    fn start_with(split: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("qh-sentinel")
            .tempdir()
            .expect("tempdir");
        let node = |n: usize| dir.path().join(format!("node-{n}"));
        let primary = Process::start(node(0), Kind::Data { replica_of: None });
        let replica_of = Some(primary.port);
        let replica = Process::start(node(1), Kind::Data { replica_of });
        // Built before anything is waited for, so that a failed wait keeps the logs.
        let mut harness = Self {
            data: [primary, replica],
            sentinels: Vec::with_capacity(SENTINELS),
            dir,
        };
        let [primary_port, replica_port] = harness.data_ports();
        eventually_blocking("the replica to link to the primary", || {
            cli(replica_port, &["INFO", "replication"])
                .contains("master_link_status:up")
                .then_some(())
        });
        wait_streaming(primary_port);
        if split {
            for port in [primary_port, replica_port] {
                let password = format!(">{CUT_OFF_USER}");
                let user = [
                    CUT_OFF_USER,
                    "on",
                    &password,
                    "~*",
                    "resetchannels",
                    "+@all",
                ];
                let denied = ["-replicaof", "-slaveof"];
                let args = [&["ACL", "SETUSER"][..], &user, &denied].concat();
                assert_eq!(cli(port, &args).trim(), "OK");
            }
            let args = ["ACL", "SETUSER", "default", "-replicaof", "-slaveof"];
            assert_eq!(cli(primary_port, &args).trim(), "OK");
        }
        // Started once the replica is linked, a sentinel finds it in its first look at
        // the primary (`INFO`, otherwise every 10 s).
        for n in 0..SENTINELS {
            let sentinel_dir = harness.dir.path().join(format!("sentinel-{n}"));
            let kind = Kind::Sentinel {
                primary: primary_port,
                cut_off: split && n == 0,
            };
            harness.sentinels.push(Process::start(sentinel_dir, kind));
        }
        for (n, sentinel) in harness.sentinels.iter().enumerate() {
            let port = sentinel.port;
            let cut_off = split && n == 0;
            // The cut-off sentinel knows no other sentinel, and has read the primary's
            // `INFO` once it lists the replica (whose links it sees drop and come back:
            // the replica refuses its hello subscription).
            let others_known = match (split, cut_off) {
                (false, _) => SENTINELS - 1,
                (true, false) => SENTINELS - 2,
                (true, true) => 0,
            };
            eventually_blocking("every sentinel to know the replica and the others", || {
                let replicas = entries(&cli(port, &["SENTINEL", "REPLICAS", MASTER_NAME]));
                let others = entries(&cli(port, &["SENTINEL", "SENTINELS", MASTER_NAME]));
                let replica_known = replicas.iter().any(|r| {
                    r.get("port") == Some(&replica_port.to_string())
                        && (cut_off
                            || r.get("flags").map(String::as_str) == Some("slave")
                                && r.get("master-link-status").map(String::as_str) == Some("ok"))
                });
                (replica_known && others.len() == others_known).then_some(())
            });
        }
        harness
    }

    /// The URL a hub is given: every sentinel, and the master name.
    pub fn url(&self) -> String {
        self.url_listing(&self.sentinel_ports())
    }

    /// The URL with the sentinels on `ports`, in that order, and the master name.
    pub fn url_listing(&self, ports: &[u16]) -> String {
        let sentinels: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", sentinels.join(","))
    }

    /// The port of the current primary, as the first sentinel names it (after a failover
    /// of [`Self::start_split`], the old primary).
    pub fn primary(&self) -> u16 {
        self.named_by(self.sentinels[0].port)
            .expect("the first sentinel names a primary")
    }

    /// The ports of the two data nodes: the first primary, then its replica.
    pub fn data_ports(&self) -> [u16; 2] {
        [self.data[0].port, self.data[1].port]
    }

    /// The ports of the sentinels.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// Runs one command against the node (or sentinel) on `port` and returns its output,
    /// trimmed (empty if nothing answers).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        cli(port, args).trim().to_owned()
    }

    /// Kills a data node with SIGKILL (its data is gone: nodes run without persistence).
    pub fn kill(&mut self, port: u16) {
        self.node(port).kill();
    }

    /// Stops a data node or a sentinel with SIGSTOP: it holds its connections but answers
    /// nothing.
    pub fn pause(&mut self, port: u16) {
        self.process(port).signal("STOP", true);
    }

    /// Lets a paused data node or sentinel run again (SIGCONT). A primary failed over
    /// meanwhile still says it is one, and takes writes, until the sentinels make it a
    /// replica (about 10 s later, see [`Self::restart`]).
    pub fn resume(&mut self, port: u16) {
        self.process(port).signal("CONT", false);
    }

    /// Starts a killed data node again on its port, directory and arguments: the first
    /// primary comes back as a primary (empty), the replica as a replica of the first
    /// primary, until the sentinels make it a replica of the current primary. That takes
    /// about 10 s: a sentinel converts a node only once it has said it is a primary for
    /// 8 s, and asks a replica for `INFO` every 10 s.
    pub fn restart(&mut self, port: u16) {
        self.node(port).restart();
    }

    /// Waits until every sentinel names a primary other than `old` and that node says
    /// it is a primary; returns its port.
    pub fn wait_promoted(&self, old: u16) -> u16 {
        self.wait_promoted_by(&self.sentinel_ports(), old)
    }

    /// Waits until each of the sentinels on `ports` names the same primary, other than
    /// `old`, and that node says it is a primary; returns its port.
    pub fn wait_promoted_by(&self, ports: &[u16], old: u16) -> u16 {
        eventually_blocking("the sentinels to promote a new primary", || {
            let named: Vec<Option<u16>> = ports.iter().map(|&s| self.named_by(s)).collect();
            let new = named[0].filter(|&port| port != old)?;
            let agreed = named.iter().all(|&port| port == Some(new));
            (agreed && self.role(new) == "master").then_some(new)
        })
    }

    /// The port of the primary the sentinel on `port` names, if it answers.
    pub fn named_by(&self, port: u16) -> Option<u16> {
        let reply = cli(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]);
        reply.lines().nth(1)?.trim().parse().ok()
    }

    /// The role the data node on `port` reports (`ROLE`'s first line: `master`, `slave`),
    /// or `""` if it does not answer.
    pub fn role(&self, port: u16) -> String {
        let reply = cli(port, &["ROLE"]);
        reply.lines().next().unwrap_or_default().trim().to_owned()
    }

    /// The instances whose votes on `decision` the data node on `port` holds, in vote
    /// order.
    pub fn voters_on(&self, port: u16, decision: &str) -> Vec<String> {
        let votes = quorum_hub::decision_key(&self.url(), decision, "votes");
        let reply = cli(port, &["ZRANGE", &votes, "0", "-1"]);
        reply
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// How many connections the node or sentinel on `port` has accepted since it started
    /// (`INFO stats`), this question's own included.
    pub fn connections_received(&self, port: u16) -> u64 {
        cli(port, &["INFO", "stats"])
            .lines()
            .find_map(|line| line.strip_prefix("total_connections_received:"))
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or_else(|| panic!("no connection count from port {port}"))
    }

    /// Waits until the data node on `replica` is a replica of the one on `primary`, its
    /// link up and streaming (a write on the primary reaches it: `qh-probe` is set and
    /// deleted there).
    pub fn wait_replicating(&self, primary: u16, replica: u16) {
        eventually_blocking("the replica to link to its primary", || {
            let info = cli(replica, &["INFO", "replication"]);
            (info.contains("role:slave")
                && info.contains(&format!("master_port:{primary}\r\n"))
                && info.contains("master_link_status:up"))
            .then_some(())
        });
        wait_streaming(primary);
    }

    fn node(&mut self, port: u16) -> &mut Process {
        self.data
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no data node on port {port}"))
    }

    /// The data node or the sentinel on `port`.
    fn process(&mut self, port: u16) -> &mut Process {
        self.data
            .iter_mut()
            .chain(&mut self.sentinels)
            .find(|p| p.port == port)
            .unwrap_or_else(|| panic!("no data node nor sentinel on port {port}"))
    }
}

/// The processes are killed as the fields drop, before the directory goes.
impl Drop for RedisSentinel {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Kept for its logs (`*/log`) and the sentinels' rewritten configs.
            self.dir.disable_cleanup(true);
            eprintln!(
                "redis-sentinel test files kept in {}",
                self.dir.path().display()
            );
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Process {
    /// Starts a process in `dir` on a free port (retrying on a taken one).
    fn start(dir: PathBuf, kind: Kind) -> Self {
        std::fs::create_dir_all(&dir).expect("process dir");
        loop {
            let port = ports::reserve();
            let mut process = Self {
                port,
                child: None,
                dir: dir.clone(),
                kind,
            };
            if let Some(child) = process.spawn() {
                process.child = Some(child);
                return process;
            }
        }
    }

    /// Starts the process, or `None` if it exited (its port was taken).
    fn spawn(&self) -> Option<Child> {
        let mut command = Command::new("redis-server");
        match self.kind {
            Kind::Data { replica_of } => {
                command
                    .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                    .args(["--repl-diskless-sync-delay", "0", "--dir"])
                    .arg(&self.dir);
                if let Some(primary) = replica_of {
                    command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
                }
            }
            Kind::Sentinel { primary, cut_off } => {
                // A file of its own: a sentinel rewrites its config.
                let conf = self.dir.join("sentinel.conf");
                let mut text = format!(
                    "port {port}\n\
                     bind 127.0.0.1\n\
                     dir \"{dir}\"\n\
                     sentinel resolve-hostnames no\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
                     sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    port = self.port,
                    dir = self.dir.display(),
                );
                if cut_off {
                    text += &format!(
                        "sentinel auth-user {MASTER_NAME} {CUT_OFF_USER}\n\
                         sentinel auth-pass {MASTER_NAME} {CUT_OFF_USER}\n"
                    );
                }
                std::fs::write(&conf, text).expect("sentinel config");
                command.arg(&conf).arg("--sentinel");
            }
        }
        let log = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("log"))
                .expect("log file")
        };
        let mut child = command
            .stdout(log())
            .stderr(log())
            .spawn()
            .expect("redis-server must be installed (make test installs it)");
        ports::started(&mut child, self.port).then_some(child)
    }

    /// Starts the process again on its port, with its directory and arguments.
    fn restart(&mut self) {
        self.kill();
        let child = eventually_blocking("a redis-server to start again", || self.spawn());
        self.child = Some(child);
    }

    /// Kills the process with SIGKILL (paused or not) and waits for it to exit.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `SIG<signal>` and waits until the process is stopped (`stopped`) or no
    /// longer stopped.
    fn signal(&self, signal: &str, stopped: bool) {
        let pid = self.child.as_ref().expect("a running process").id();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
        eventually_blocking("a process to stop or continue", || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            ((state == 'T') == stopped).then_some(())
        });
    }
}

/// The entries of a `SENTINEL REPLICAS`/`SENTINEL SENTINELS` reply as redis-cli prints
/// it (one field name or value a line, each entry starting with `name`).
fn entries(reply: &str) -> Vec<HashMap<String, String>> {
    let lines: Vec<&str> = reply.lines().collect();
    let mut entries: Vec<HashMap<String, String>> = Vec::new();
    for pair in lines.chunks_exact(2) {
        if pair[0] == "name" {
            entries.push(HashMap::new());
        }
        if let Some(entry) = entries.last_mut() {
            entry.insert(pair[0].to_owned(), pair[1].to_owned());
        }
    }
    entries
}

/// Waits until a write on the primary on `port` reaches its replica: one that has just
/// synced may not stream yet (the primary holds the stream back until its first
/// acknowledgement).
fn wait_streaming(port: u16) {
    eventually_blocking("the replica to stream", || {
        let script = format!("SET qh-probe streaming\nWAIT 1 {STREAMING_PROBE_MS}\nDEL qh-probe\n");
        let reply = cli_script(port, &script);
        (reply.lines().nth(1) == Some("1")).then_some(())
    });
}
