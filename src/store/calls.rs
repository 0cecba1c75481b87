//! How one call reaches Redis: admitted by the circuit breaker, on the connection it
//! goes through, with the scripts loaded again if Redis lost them, and with
//! `--wait-replicas` answered only once replicas have the write.

use futures::future::try_join_all;
use prometheus_client::metrics::counter::Counter;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, Script, ServerErrorKind, Value};

use super::Store;
use super::connection::{Backend, Conn, connection_of, watch};
use crate::breaker::{Admission, Breaker};
use crate::error::Error;

/// Reports one admitted call to the breaker when dropped: as a failure unless
/// [`Admitted::finish`] saw it succeed, so a call cancelled by a timeout counts as one.
struct Admitted<'a> {
    /// `None` for an unguarded store: the outcome is counted, not reported.
    breaker: Option<&'a Breaker>,
    errors: &'a Counter,
    failed: bool,
}

impl Admitted<'_> {
    fn finish<T>(mut self, result: Result<T, RedisError>) -> Result<T, Error> {
        self.failed = result.is_err();
        result.map_err(Error::from)
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if self.failed {
            self.errors.inc();
        }
        if let Some(breaker) = self.breaker {
            breaker.record(self.failed);
        }
    }
}

impl Store {
    /// Asks the breaker for one call to Redis.
    fn admit(&self) -> Result<Admitted<'_>, Error> {
        if !self.guarded {
            return Ok(Admitted {
                breaker: None,
                errors: &self.errors,
                failed: true,
            });
        }
        match self.breaker.admit() {
            Admission::Allowed => Ok(Admitted {
                breaker: Some(&self.breaker),
                errors: &self.errors,
                failed: true,
            }),
            Admission::Refused { retry_after } => Err(Error::CircuitOpen { retry_after }),
        }
    }

    /// The connection for one call, and on a cluster which one it is.
    fn conn(&self) -> (Conn, u64) {
        connection_of(&self.backend)
    }

    /// Looks at a call's outcome: a cluster connection on which a call timed out is
    /// replaced.
    fn watch<T>(&self, generation: u64, result: &Result<T, RedisError>) {
        watch(&self.backend, generation, result);
    }

    /// Loads every script into Redis's script cache.
    pub(crate) async fn load_scripts(&self) -> Result<(), Error> {
        let (mut conn, generation) = self.conn();
        let admitted = self.admit()?;
        let mut result = Ok(());
        for script in self.scripts.all() {
            if let Err(e) = script.prepare_invoke().load_async(&mut conn).await {
                result = Err(e);
                break;
            }
        }
        self.watch(generation, &result);
        admitted.finish(result)
    }

    /// Sends one command.
    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Error> {
        let (mut conn, generation) = self.conn();
        let admitted = self.admit()?;
        let result = cmd.query_async(&mut conn).await;
        self.watch(generation, &result);
        admitted.finish(result)
    }

    /// Sends commands that may touch keys of different slots, and returns their replies
    /// in order: one pipeline on one Redis; on a cluster, each command on its own (sent
    /// at once, so the cluster connection pipelines those for one node). Not atomic in
    /// either case.
    pub(super) async fn query_each(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>, Error> {
        match &self.backend {
            Backend::Single(_) | Backend::Sentinel(_) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                self.query_pipe(&pipe).await
            }
            Backend::Cluster(_) => {
                try_join_all(cmds.into_iter().map(|cmd| async move {
                    let mut pipe = redis::pipe();
                    pipe.add_command(cmd);
                    let (reply,): (Value,) = self.query_pipe(&pipe).await?;
                    Ok::<_, Error>(reply)
                }))
                .await
            }
        }
    }

    /// Sends a pipeline that may contain EVALSHA calls, loading the scripts and retrying
    /// once if Redis lost its script cache (a restart or `SCRIPT FLUSH`).
    pub(super) async fn query_pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, Error> {
        self.query_pipe_via(&self.backend, pipe).await
    }

    /// [`Store::query_pipe`] through a given backend.
    async fn query_pipe_via<T: FromRedisValue>(
        &self,
        backend: &Backend,
        pipe: &Pipeline,
    ) -> Result<T, Error> {
        let (mut conn, generation) = connection_of(backend);
        let admitted = self.admit()?;
        match pipe.query_async(&mut conn).await {
            Err(e) if is_noscript(&e) => {
                // Redis answered, so this was no backend failure.
                drop(admitted.finish(Ok(())));
                tracing::info!("Redis lost its script cache; loading the scripts again");
                self.load_scripts().await?;
                let admitted = self.admit()?;
                let result = pipe.query_async(&mut conn).await;
                watch(backend, generation, &result);
                admitted.finish(result)
            }
            other => {
                watch(backend, generation, &other);
                admitted.finish(other)
            }
        }
    }

    /// Runs one script that writes, and with `--wait-replicas` answers only once the
    /// write is on that many replicas: `WAIT` in the same pipeline, on the connection (and
    /// so the node) that ran the script.
    pub(super) async fn eval_acknowledged<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, Error> {
        self.write_acknowledged(evalsha(script, keys, args)).await
    }

    /// Sends one command that writes, and with `--wait-replicas` answers only once the
    /// write is on that many replicas (see [`Store::eval_acknowledged`]).
    pub(super) async fn write_acknowledged<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T, Error> {
        let (reply, confirmed) = self.write_and_wait(cmd).await?;
        confirmed.map(|()| reply)
    }

    /// [`Store::write_acknowledged`] on the publisher's own connection.
    pub(super) async fn write_acknowledged_for_publisher<T: FromRedisValue>(
        &self,
        cmd: Cmd,
    ) -> Result<T, Error> {
        let (reply, confirmed) = self.wait_via(self.acked.publisher_backend(), cmd).await?;
        confirmed.map(|()| reply)
    }

    /// [`Store::write_acknowledged`] for a caller that acts on the reply even when too few
    /// replicas confirmed the write in time (it is in the primary): the reply, and
    /// whether it was confirmed.
    pub(super) async fn write_and_wait<T: FromRedisValue>(
        &self,
        cmd: Cmd,
    ) -> Result<(T, Result<(), Error>), Error> {
        self.wait_via(self.acked.next_backend(), cmd).await
    }

    /// [`Store::write_and_wait`] through `backend` (`None`: no replicas to wait for).
    async fn wait_via<T: FromRedisValue>(
        &self,
        backend: Option<&Backend>,
        cmd: Cmd,
    ) -> Result<(T, Result<(), Error>), Error> {
        let acked = &self.acked;
        let Some(backend) = backend else {
            let mut pipe = redis::pipe();
            pipe.add_command(cmd);
            let (reply,): (T,) = self.query_pipe(&pipe).await?;
            return Ok((reply, Ok(())));
        };
        let mut pipe = redis::pipe();
        pipe.add_command(cmd)
            .cmd("WAIT")
            .arg(acked.replicas)
            .arg(acked.timeout_ms);
        let (reply, acknowledged): (T, u64) = self.query_pipe_via(backend, &pipe).await?;
        let confirmed = if acknowledged < u64::from(acked.replicas) {
            Err(Error::Replication {
                acknowledged,
                wanted: acked.replicas,
            })
        } else {
            Ok(())
        };
        Ok((reply, confirmed))
    }

    /// Runs one script with EVALSHA (reloading it on NOSCRIPT).
    pub(super) async fn eval<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, Error> {
        let mut pipe = redis::pipe();
        pipe.add_command(evalsha(script, keys, args));
        let (reply,): (T,) = self.query_pipe(&pipe).await?;
        Ok(reply)
    }
}

pub(super) fn evalsha(script: &Script, keys: &[&str], args: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash())
        .arg(keys.len())
        .arg(keys)
        .arg(args);
    cmd
}

fn is_noscript(e: &RedisError) -> bool {
    // A pipeline's error wraps the command's ("Pipeline failure: ... NoScript: ...").
    e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript)
        || e.to_string().to_ascii_lowercase().contains("noscript")
}
