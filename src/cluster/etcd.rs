//! A small blocking etcd v3 client over etcd's JSON gateway (`POST /v3/...`, keys and
//! values in base64, 64-bit numbers as strings), on `ureq`. Why the gateway and not a
//! gRPC crate: docs/ARCHITECTURE.md, decisions. It owns the retry policy: each request
//! has a per-request timeout and goes to the next endpoint when one fails; one operation
//! is retried over the endpoints until its deadline (at most `retry_timeout`), then it
//! fails with the last error. The endpoint that answered last is tried first next time.
//!
//! Only the calls the leader loop needs: range (one key or a prefix), put, a
//! create-if-absent txn, a delete-if-value txn, lease grant / keepalive / revoke.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

/// One key-value pair read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: String,
    /// The revision at which the key was created (its "generation": a new leader key
    /// always has a higher one).
    pub create_revision: u64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

/// A failed etcd operation, as a sentence naming the endpoint(s) and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EtcdError(pub String);

/// The client: endpoints, per-request timeout, and where the last answer came from.
pub struct Etcd {
    endpoints: Vec<String>,
    agent: ureq::Agent,
    per_request: Duration,
    preferred: usize,
}

fn enc(s: &str) -> String {
    B64.encode(s.as_bytes())
}

fn dec(v: &Value) -> String {
    v.as_str()
        .and_then(|s| B64.decode(s).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A gateway number: a JSON string ("42") or number; absent is 0.
fn num(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// The key just after every key that starts with `prefix` (etcd's `range_end`).
fn prefix_end(prefix: &str) -> String {
    let mut b = prefix.as_bytes().to_vec();
    while let Some(last) = b.pop() {
        if last < 0xff {
            b.push(last + 1);
            return B64.encode(&b);
        }
    }
    B64.encode([0u8])
}

impl Etcd {
    /// A client of `endpoints` (`http://host:port`); each request times out after
    /// `per_request`.
    pub fn new(endpoints: &[String], per_request: Duration) -> Etcd {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(per_request))
            .http_status_as_error(false)
            .build()
            .into();
        Etcd {
            endpoints: endpoints.to_vec(),
            agent,
            per_request,
            preferred: 0,
        }
    }

    /// The per-request timeout.
    pub fn per_request(&self) -> Duration {
        self.per_request
    }

    /// POSTs `body` to `path` on the endpoints in turn until one answers with 200 or
    /// `deadline` passes.
    fn call(&mut self, path: &str, body: &Value, deadline: Instant) -> Result<Value, EtcdError> {
        let n = self.endpoints.len();
        let mut last = String::from("no endpoint tried");
        let mut i = 0usize;
        loop {
            let idx = (self.preferred + i) % n;
            let ep = &self.endpoints[idx];
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(EtcdError(format!("etcd {path}: gave up: {last}")));
            }
            let started = Instant::now();
            match self.once(ep, path, body, left.min(self.per_request)) {
                Ok(v) => {
                    self.preferred = idx;
                    return Ok(v);
                }
                Err(e) => {
                    tracing::debug!("etcd {ep}{path}: {e}");
                    last = format!("{ep}: {e}");
                }
            }
            i += 1;
            // A full round of quick refusals: pause a little instead of spinning.
            if i.is_multiple_of(n) && started.elapsed() < Duration::from_millis(50) {
                std::thread::sleep(
                    Duration::from_millis(100)
                        .min(deadline.saturating_duration_since(Instant::now())),
                );
            }
        }
    }

    fn once(&self, ep: &str, path: &str, body: &Value, timeout: Duration) -> Result<Value, String> {
        let req = self
            .agent
            .post(format!("{ep}{path}"))
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Content-Type", "application/json");
        let mut resp = req.send(body.to_string()).map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("reading the answer: {e}"))?;
        if status != 200 {
            let short: String = text.chars().take(200).collect();
            return Err(format!("HTTP {status}: {short}"));
        }
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("answer is not JSON ({e})"))?;
        // A stream endpoint (keepalive) wraps its message in "result" or "error".
        if let Some(err) = v.get("error") {
            return Err(format!("etcd error: {err}"));
        }
        Ok(v)
    }

    fn kvs(v: &Value) -> Vec<Kv> {
        v.get("kvs")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|kv| Kv {
                        key: dec(&kv["key"]),
                        value: dec(&kv["value"]),
                        create_revision: num(&kv["create_revision"]).max(0) as u64,
                        lease: num(&kv["lease"]),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The value of `key`, if it exists.
    pub fn get(&mut self, key: &str, deadline: Instant) -> Result<Option<Kv>, EtcdError> {
        let v = self.call("/v3/kv/range", &json!({"key": enc(key)}), deadline)?;
        Ok(Self::kvs(&v).into_iter().next())
    }

    /// Every key under `prefix`, in key order, and the store's revision at the read.
    pub fn list(&mut self, prefix: &str, deadline: Instant) -> Result<(Vec<Kv>, u64), EtcdError> {
        let body = json!({"key": enc(prefix), "range_end": prefix_end(prefix)});
        let v = self.call("/v3/kv/range", &body, deadline)?;
        let rev = num(&v["header"]["revision"]).max(0) as u64;
        Ok((Self::kvs(&v), rev))
    }

    /// Waits until `key` changes after `revision` (a watch from `revision + 1`, on the
    /// endpoint that answered last) or `wait` passes. `Ok(true)`: it changed.
    pub fn watch(&mut self, key: &str, revision: u64, wait: Duration) -> Result<bool, EtcdError> {
        use std::io::BufRead as _;
        let ep = self.endpoints[self.preferred % self.endpoints.len()].clone();
        let body = json!({"create_request": {"key": enc(key), "start_revision": (revision + 1).to_string()}});
        let req = self
            .agent
            .post(format!("{ep}/v3/watch"))
            .config()
            .timeout_global(Some(wait))
            .build()
            .header("Content-Type", "application/json");
        let resp = req
            .send(body.to_string())
            .map_err(|e| EtcdError(format!("etcd {ep}/v3/watch: {e}")))?;
        if resp.status().as_u16() != 200 {
            return Err(EtcdError(format!(
                "etcd {ep}/v3/watch: HTTP {}",
                resp.status()
            )));
        }
        let mut lines = std::io::BufReader::new(resp.into_body().into_reader()).lines();
        // Each message is one JSON object: first the watch's creation, then events.
        while let Some(Ok(line)) = lines.next() {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let r = v.get("result").unwrap_or(&v);
            if r.get("events")
                .and_then(Value::as_array)
                .is_some_and(|e| !e.is_empty())
            {
                return Ok(true);
            }
            if r.get("canceled").and_then(Value::as_bool) == Some(true) {
                return Ok(true);
            }
        }
        // Timed out (or the stream ended): nothing changed that we saw.
        Ok(false)
    }

    /// Sets `key` (attached to `lease` when it is not 0).
    pub fn put(
        &mut self,
        key: &str,
        value: &str,
        lease: i64,
        deadline: Instant,
    ) -> Result<(), EtcdError> {
        let mut body = json!({"key": enc(key), "value": enc(value)});
        if lease != 0 {
            body["lease"] = json!(lease.to_string());
        }
        self.call("/v3/kv/put", &body, deadline).map(|_| ())
    }

    /// Creates `key` = `value` under `lease` only if it does not exist (compare-and-set
    /// on `create_revision == 0`). `Ok(Some(create_revision))`: created;
    /// `Ok(None)`: someone holds it.
    pub fn create(
        &mut self,
        key: &str,
        value: &str,
        lease: i64,
        deadline: Instant,
    ) -> Result<Option<u64>, EtcdError> {
        let body = json!({
            "compare": [{"target": "CREATE", "key": enc(key), "create_revision": "0"}],
            "success": [
                {"request_put": {"key": enc(key), "value": enc(value), "lease": lease.to_string()}},
                {"request_range": {"key": enc(key)}}
            ],
        });
        let v = self.call("/v3/kv/txn", &body, deadline)?;
        if v.get("succeeded").and_then(Value::as_bool) != Some(true) {
            return Ok(None);
        }
        let rev = v["responses"]
            .as_array()
            .and_then(|r| r.get(1))
            .map(|r| Self::kvs(&r["response_range"]))
            .and_then(|k| k.into_iter().next())
            .map_or(0, |kv| kv.create_revision);
        Ok(Some(rev))
    }

    /// Deletes `key` only if its value is `value`. Returns whether it was deleted.
    pub fn delete_if(
        &mut self,
        key: &str,
        value: &str,
        deadline: Instant,
    ) -> Result<bool, EtcdError> {
        let body = json!({
            "compare": [{"target": "VALUE", "key": enc(key), "value": enc(value)}],
            "success": [{"request_delete_range": {"key": enc(key)}}],
        });
        let v = self.call("/v3/kv/txn", &body, deadline)?;
        Ok(v.get("succeeded").and_then(Value::as_bool) == Some(true))
    }

    /// Deletes `key` (whatever its value).
    pub fn delete(&mut self, key: &str, deadline: Instant) -> Result<(), EtcdError> {
        self.call("/v3/kv/deleterange", &json!({"key": enc(key)}), deadline)
            .map(|_| ())
    }

    /// A new lease of `ttl` (whole seconds, rounded up); its id.
    pub fn grant(&mut self, ttl: Duration, deadline: Instant) -> Result<i64, EtcdError> {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let v = self.call(
            "/v3/lease/grant",
            &json!({"TTL": secs.to_string()}),
            deadline,
        )?;
        let id = num(&v["ID"]);
        if id == 0 {
            return Err(EtcdError(format!(
                "etcd lease grant: no lease in the answer {v}"
            )));
        }
        Ok(id)
    }

    /// Renews `lease`. `Ok(true)`: renewed; `Ok(false)`: it no longer exists (expired).
    pub fn keepalive(&mut self, lease: i64, deadline: Instant) -> Result<bool, EtcdError> {
        let v = self.call(
            "/v3/lease/keepalive",
            &json!({"ID": lease.to_string()}),
            deadline,
        )?;
        let r = v.get("result").unwrap_or(&v);
        Ok(num(&r["TTL"]) > 0)
    }

    /// Revokes `lease` (its keys vanish at once).
    pub fn revoke(&mut self, lease: i64, deadline: Instant) -> Result<(), EtcdError> {
        self.call(
            "/v3/lease/revoke",
            &json!({"ID": lease.to_string()}),
            deadline,
        )
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("/a/"), enc("/a0"));
        assert_eq!(num(&json!("42")), 42);
        assert_eq!(num(&json!(7)), 7);
        assert_eq!(num(&Value::Null), 0);
        assert_eq!(dec(&json!(enc("x y"))), "x y");
    }
}
