//! `RedisCluster`: a private Redis Cluster of 3 primaries and 3 replicas, for one test.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::ports;
use super::redis_cli::{bounded, cli, cli_script};
use super::{DEADLINE, eventually_blocking};

/// Primaries in a test cluster; each has one replica.
pub const PRIMARIES: usize = 3;
/// Times a cluster is built afresh when `redis-cli --cluster create` fails.
const CREATE_ATTEMPTS: usize = 3;
/// How long `redis-cli --cluster create` may take. It waits without end for the nodes to
/// agree on the cluster's layout, which they never do if one of them is not this
/// cluster's; stopped, the attempt counts as failed.
const CREATE_LIMIT: Duration = Duration::from_secs(60);

/// One redis-server of the cluster.
pub struct Node {
    pub port: u16,
    child: Option<Child>,
    dir: std::path::PathBuf,
}

/// Six redis-servers on loopback ports, joined into a cluster, each replica linked.
pub struct RedisCluster {
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> Self {
        let mut failures = Vec::new();
        for _ in 0..CREATE_ATTEMPTS {
            match Self::create() {
                Ok(cluster) => {
                    cluster.wait_healthy();
                    return cluster;
                }
                Err(output) => {
                    eprintln!(
                        "redis-cli --cluster create failed; building a new cluster:\n{output}"
                    );
                    failures.push(output);
                }
            }
        }
        panic!("redis-cli --cluster create failed {CREATE_ATTEMPTS} times:\n{failures:#?}");
    }

    /// Six fresh nodes joined by `redis-cli --cluster create`, or what it said when it failed.
    fn create() -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("qh-cluster")
            .tempdir()
            .expect("tempdir");
        let nodes = (0..PRIMARIES * 2)
            .map(|n| Node::start(dir.path(), n))
            .collect::<Vec<_>>();
        let cluster = Self { nodes, dir };
        let mut create = bounded(CREATE_LIMIT, "redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let output = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (make test installs it)");
        if output.status.success() {
            Ok(cluster)
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Waits until every node reports `cluster_state:ok` and knows every other node, and
    /// every replica's link to its primary is up.
    pub fn wait_healthy(&self) {
        let live: Vec<u16> = self.live_ports();
        eventually_blocking("the cluster to be healthy", || {
            live.iter()
                .all(|&port| {
                    let info = cli(port, &["CLUSTER", "INFO"]);
                    let replication = cli(port, &["INFO", "replication"]);
                    let known = cli(port, &["CLUSTER", "NODES"])
                        .lines()
                        .filter(|l| !l.contains("fail"))
                        .count();
                    info.contains("cluster_state:ok")
                        && known >= live.len()
                        && (!replication.contains("role:slave")
                            || replication.contains("master_link_status:up"))
                })
                .then_some(())
        });
        // A linked replica may not be streaming yet (after a full sync the primary holds
        // the stream back until the replica's first acknowledgement): a write on every
        // primary that has a replica must reach it.
        for port in self.primaries() {
            if !cli(port, &["INFO", "replication"]).contains("slave0:") {
                continue;
            }
            let key = self.key_served_by(port);
            eventually_blocking("every replica to stream", || {
                let script = format!("SET {key} streaming\nWAIT 1 1000\n");
                let reply = cli_script(port, &script);
                (reply.lines().last() == Some("1")).then_some(())
            });
        }
    }

    /// A key whose slot the primary on `port` serves.
    fn key_served_by(&self, port: u16) -> String {
        (0..)
            .map(|n| format!("probe-{n}"))
            .find(|key| self.serving(key) == Some(port))
            .expect("a primary serves some slots")
    }

    /// The URL a hub is given: every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// A `redis://` URL per live node.
    pub fn seeds(&self) -> Vec<String> {
        self.live_ports()
            .into_iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// Runs one command on a live node with `redis-cli -c` (which follows redirects) and
    /// returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let port = self.live_ports()[0];
        let output = bounded(DEADLINE, "redis-cli")
            .args(["-c", "-p", &port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The port of the primary that serves `key`.
    pub fn primary_of(&self, key: &str) -> u16 {
        self.serving(key).expect("a primary serves every slot")
    }

    /// The port of the primary that serves `key`, if a live one does (none while a
    /// failover is under way).
    pub fn serving(&self, key: &str) -> Option<u16> {
        let slot: u16 = self
            .cli(&["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("a slot number");
        let port = self.live_ports()[0];
        let nodes = cli(port, &["CLUSTER", "NODES"]);
        nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let serves = fields[8..].iter().any(|range| match range.split_once('-') {
                    Some((lo, hi)) => {
                        lo.parse::<u16>().is_ok_and(|lo| lo <= slot)
                            && hi.parse::<u16>().is_ok_and(|hi| slot <= hi)
                    }
                    None => range.parse::<u16>() == Ok(slot),
                });
                let addr = fields[1].split('@').next()?;
                serves.then(|| addr.rsplit(':').next()?.parse().ok())?
            })
    }

    /// The ports of the live primaries.
    pub fn primaries(&self) -> Vec<u16> {
        self.live_ports()
            .into_iter()
            .filter(|&port| cli(port, &["INFO", "replication"]).contains("role:master"))
            .collect()
    }

    /// Moves the slot of `key`, with its keys, to the primary on `to`, the way
    /// `redis-cli --cluster reshard` does: importing and migrating marks, `MIGRATE` of
    /// every key, then the new owner told to every primary.
    pub fn move_slot_of(&self, key: &str, to: u16) {
        let slot = self.cli(&["CLUSTER", "KEYSLOT", key]);
        let from = self.primary_of(key);
        let id = |port: u16| cli(port, &["CLUSTER", "MYID"]).trim().to_owned();
        let (from_id, to_id) = (id(from), id(to));
        cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        loop {
            let listed = cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            let keys: Vec<&str> = listed.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = to.to_string();
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            migrate.extend(keys);
            let reply = cli(from, &migrate);
            assert!(reply.contains("OK"), "MIGRATE failed: {reply}");
        }
        let mut told = vec![to, from];
        told.extend(
            self.primaries()
                .into_iter()
                .filter(|p| *p != to && *p != from),
        );
        for port in told {
            cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
    }

    /// The port of the replica of the primary on `port`, as the primary lists it.
    pub fn replica_of(&self, port: u16) -> u16 {
        eventually_blocking("the primary to list its replica", || {
            let primary_id = cli(port, &["CLUSTER", "MYID"]).trim().to_owned();
            cli(port, &["CLUSTER", "NODES"]).lines().find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let replica = fields.get(2)?.contains("slave")
                    && !primary_id.is_empty()
                    && fields.get(3) == Some(&primary_id.as_str());
                let addr = fields.get(1)?.split('@').next()?;
                replica.then(|| addr.rsplit(':').next()?.parse().ok())?
            })
        })
    }

    /// Starts a killed node again on its port; it rejoins the cluster.
    pub fn restart(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node on that port")
            .restart();
    }

    /// Kills a node with SIGKILL.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node on that port");
        node.kill();
    }
}

impl Node {
    /// Starts node `n` on a free port pair (retrying on a taken one).
    fn start(dir: &std::path::Path, n: usize) -> Self {
        loop {
            let port = ports::reserve();
            let node_dir = dir.join(format!("node-{n}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            if let Some(child) = spawn(&node_dir, port) {
                return Self {
                    port,
                    child: Some(child),
                    dir: node_dir,
                };
            }
        }
    }

    /// Starts the node again on its port and directory: it rejoins the cluster from its
    /// `nodes.conf` (a primary that was failed over comes back as a replica).
    fn restart(&mut self) {
        self.kill();
        let child = eventually_blocking("a cluster node to start again", || {
            spawn(&self.dir, self.port)
        });
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// Starts a cluster node on `port` with its files in `dir`, or `None` if it exited (its
/// port was taken).
fn spawn(dir: &std::path::Path, port: u16) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
        .args(["--repl-diskless-sync-delay", "0", "--save", ""])
        .args(["--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (make test installs it)");
    ports::started(&mut child, port).then_some(child)
}
