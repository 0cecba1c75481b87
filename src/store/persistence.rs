//! What an acknowledged vote survives on this Redis: its persistence settings, read at
//! start-up.

use std::collections::HashMap;

use super::Store;
use crate::error::Error;

impl Store {
    /// Reads the server's persistence settings and says what an acknowledged vote could
    /// lose, if anything. (On a cluster, the settings of whichever node answers.)
    pub(crate) async fn durability_warning(&self) -> Option<String> {
        let read = async {
            let aof: HashMap<String, String> = self
                .query(redis::cmd("CONFIG").arg("GET").arg("appendonly"))
                .await?;
            let fsync: HashMap<String, String> = self
                .query(redis::cmd("CONFIG").arg("GET").arg("appendfsync"))
                .await?;
            Ok::<_, Error>((aof, fsync))
        };
        let (aof, fsync) = match read.await {
            Ok(reply) => reply,
            Err(err) => {
                return Some(format!(
                    "could not read Redis persistence settings ({err}); acknowledged votes are only as durable as that server makes them"
                ));
            }
        };
        match (aof.get("appendonly").map(String::as_str), fsync.get("appendfsync").map(String::as_str)) {
            (Some("yes"), Some("always")) => None,
            (Some("yes"), Some(policy)) => Some(format!(
                "Redis runs with appendfsync {policy}: a Redis crash can lose votes acknowledged in the last second; set appendfsync always"
            )),
            _ => Some(
                "Redis runs without append-only persistence: a Redis restart loses acknowledged votes; set appendonly yes and appendfsync always"
                    .to_owned(),
            ),
        }
    }
}
