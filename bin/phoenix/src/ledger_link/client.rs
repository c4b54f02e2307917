//! A blocking client of the ledger's HTTP API for the CLI: one kept-alive connection to the
//! first URL that answers, every request bounded by a timeout (a ledger that accepts a
//! connection and never answers must not hang an apply).

use anyhow::{Context as _, bail};
use phoenix_ledger_node::http::Conn;
use phoenix_ledger_types::crypto::{Hash, PublicKey};
use phoenix_ledger_types::tx::Transaction;
use serde_json::Value;
use std::time::Duration;

/// How long one request may take before the ledger counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the ledger says about a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxState {
    /// In a finalized block.
    Committed,
    /// In the mempool (or not seen yet).
    Pending,
    /// Refused at execution, with the reason.
    Rejected(String),
}

/// The ledger, reached through one of its API URLs.
pub(crate) struct Client {
    runtime: tokio::runtime::Runtime,
    urls: Vec<String>,
    /// The URL in use, and its connection.
    current: Option<(usize, Conn)>,
}

impl Client {
    /// A client of the ledger at `urls` (tried in order until one answers).
    ///
    /// # Errors
    /// No URL, or a runtime that cannot start.
    pub(crate) fn new(urls: &[String]) -> anyhow::Result<Self> {
        if urls.is_empty() {
            bail!("--ledger needs at least one API URL (http://HOST:PORT)");
        }
        for url in urls {
            if !url.starts_with("http://") {
                bail!(
                    "ledger URL `{url}` must start with http:// (the ledger API speaks plain HTTP; put TLS in front of it with a proxy)"
                );
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the ledger client's runtime")?;
        Ok(Self {
            runtime,
            urls: urls.to_vec(),
            current: None,
        })
    }

    /// The URL in use (or the first one).
    pub(crate) fn url(&self) -> &str {
        let i = self.current.as_ref().map_or(0, |(i, _)| *i);
        &self.urls[i]
    }

    /// Every URL, for messages.
    pub(crate) fn urls(&self) -> String {
        self.urls.join(",")
    }

    /// One request, on the connection in use or, when that fails, on each other URL in turn.
    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        let start = self.current.as_ref().map_or(0, |(i, _)| *i);
        let mut errors = Vec::new();
        for step in 0..self.urls.len() {
            let index = (start + step) % self.urls.len();
            if self.current.as_ref().is_none_or(|(i, _)| *i != index) {
                self.current = Some((index, Conn::new(&self.urls[index])));
            }
            let (_, conn) = self.current.as_mut().expect("just set");
            let sent = self.runtime.block_on(async {
                tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    conn.request(method, path, "application/octet-stream", body),
                )
                .await
            });
            match sent {
                Ok(Ok(r)) => return Ok((r.status, r.body)),
                Ok(Err(e)) => errors.push(format!("{}: {e:#}", self.urls[index])),
                Err(_) => errors.push(format!(
                    "{}: no answer within {} s",
                    self.urls[index],
                    REQUEST_TIMEOUT.as_secs()
                )),
            }
            self.current = None;
        }
        bail!("cannot reach the ledger ({})", errors.join("; "))
    }

    /// `GET path` as JSON, `None` when the ledger answers 404 (the explorer of `phoenix serve`
    /// reads the ledger's API through this client).
    ///
    /// # Errors
    /// The ledger cannot be reached or answers nonsense.
    pub(crate) fn get_json_at(&mut self, path: &str) -> anyhow::Result<Option<Value>> {
        self.get_json(path)
    }

    fn get_json(&mut self, path: &str) -> anyhow::Result<Option<Value>> {
        let (status, body) = self.request("GET", path, b"")?;
        match status {
            404 => Ok(None),
            200 => Ok(Some(serde_json::from_slice(&body).with_context(|| {
                format!(
                    "the ledger at {} answered {path} with something that is not JSON",
                    self.url()
                )
            })?)),
            other => bail!(
                "the ledger at {} answered {path} with HTTP {other}: {}",
                self.url(),
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// A state entry's value (`GET /v1/state/{module}/{key}`), `None` if there is none.
    ///
    /// # Errors
    /// The ledger cannot be reached or answers nonsense.
    pub(crate) fn state(&mut self, module: &str, key: &str) -> anyhow::Result<Option<Value>> {
        Ok(self
            .get_json(&format!("/v1/state/{module}/{key}"))?
            .map(|v| v["value"].clone()))
    }

    /// The chain id (`GET /v1/status`).
    ///
    /// # Errors
    /// The ledger cannot be reached or answers nonsense.
    pub(crate) fn chain_id(&mut self) -> anyhow::Result<String> {
        let status = self
            .get_json("/v1/status")?
            .context("the ledger has no /v1/status")?;
        status["chain_id"]
            .as_str()
            .map(str::to_owned)
            .context("the ledger's status names no chain_id")
    }

    /// The account's next nonce in the finalized state (0 for an account never seen).
    ///
    /// # Errors
    /// The ledger cannot be reached or answers nonsense.
    pub(crate) fn next_nonce(&mut self, account: &PublicKey) -> anyhow::Result<u64> {
        Ok(self
            .state("accounts", &account.to_string())?
            .and_then(|a| a["nonce"].as_u64())
            .unwrap_or(0))
    }

    /// Submits transactions in one `POST /v1/txs`; for each, `Ok` when admitted and the
    /// reason otherwise.
    ///
    /// # Errors
    /// The ledger cannot be reached or answers nonsense.
    pub(crate) fn submit(
        &mut self,
        txs: &[Transaction],
    ) -> anyhow::Result<Vec<Result<(), String>>> {
        let mut body = Vec::new();
        for tx in txs {
            let bytes = tx.encode();
            let len = u32::try_from(bytes.len()).context("transaction too large")?;
            body.extend_from_slice(&len.to_be_bytes());
            body.extend_from_slice(&bytes);
        }
        let (status, answer) = self.request("POST", "/v1/txs", &body)?;
        if status != 200 {
            bail!(
                "the ledger at {} refused the batch with HTTP {status}: {}",
                self.url(),
                String::from_utf8_lossy(&answer)
            );
        }
        let answer: Value = serde_json::from_slice(&answer)
            .context("the ledger's answer to a batch is not JSON")?;
        let mut verdicts = vec![Ok(()); txs.len()];
        for r in answer["rejected"].as_array().into_iter().flatten() {
            if let Some(i) = r["index"].as_u64().and_then(|i| usize::try_from(i).ok())
                && let Some(v) = verdicts.get_mut(i)
            {
                *v = Err(r["reason"].as_str().unwrap_or("rejected").to_owned());
            }
        }
        Ok(verdicts)
    }

    /// Where a transaction is (`GET /v1/tx/{hash}`).
    ///
    /// # Errors
    /// The ledger cannot be reached or answers nonsense.
    pub(crate) fn tx_state(&mut self, hash: &Hash) -> anyhow::Result<TxState> {
        let Some(v) = self.get_json(&format!("/v1/tx/{hash}"))? else {
            return Ok(TxState::Pending);
        };
        Ok(match v["status"].as_str() {
            Some("committed") => TxState::Committed,
            Some("rejected") => {
                TxState::Rejected(v["reason"].as_str().unwrap_or("rejected").to_owned())
            }
            _ => TxState::Pending,
        })
    }
}
