//! A client of QEMU's machine protocol (QMP) on a Unix socket: just what
//! saving and restoring a booted host needs (stop, migrate to a file,
//! wait for the migration, continue, quit).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// One QMP session, capabilities negotiated.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to QEMU's QMP socket, waiting up to `patience` for QEMU to
    /// create it (QEMU makes it while it starts).
    pub fn connect(socket: &Path, patience: Duration) -> Result<Qmp> {
        let until = Instant::now() + patience;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= until => {
                    return Err(e).with_context(|| {
                        format!(
                            "QEMU's QMP socket {} did not open within {} s",
                            socket.display(),
                            patience.as_secs()
                        )
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .context("setting a timeout on the QMP socket")?;
        let writer = stream.try_clone().context("cloning the QMP socket")?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.message()?;
        if greeting.get("QMP").is_none() {
            bail!(
                "QEMU's QMP socket {} did not greet with QMP: {greeting}",
                socket.display()
            );
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    /// The next message QEMU sends.
    fn message(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .context("reading from QEMU's QMP socket")?;
        if n == 0 {
            bail!("QEMU closed its QMP socket");
        }
        serde_json::from_str(&line)
            .with_context(|| format!("QEMU sent something that is not QMP: {line:?}"))
    }

    /// Runs a command and returns its `return` value; QEMU's error is an
    /// error naming the command. Events that arrive meanwhile are skipped.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let request = if arguments.as_object().is_some_and(|a| a.is_empty()) {
            json!({ "execute": command })
        } else {
            json!({ "execute": command, "arguments": arguments })
        };
        writeln!(self.writer, "{request}")
            .with_context(|| format!("sending QMP command {command}"))?;
        loop {
            let reply = self.message()?;
            if let Some(value) = reply.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = reply.get("error") {
                let desc = error
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("no description");
                bail!("QEMU refused QMP command {command}: {desc}");
            }
        }
    }

    /// The machine's run state (`running`, `paused`, `inmigrate`, ...).
    pub fn status(&mut self) -> Result<String> {
        let v = self.execute("query-status", json!({}))?;
        Ok(v.get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    /// Waits until the machine has left `state` (e.g. `inmigrate` while an
    /// incoming migration loads), up to `patience`; returns the new state.
    pub fn wait_while(&mut self, state: &str, patience: Duration) -> Result<String> {
        let until = Instant::now() + patience;
        loop {
            let now = self.status()?;
            if now != state {
                return Ok(now);
            }
            if Instant::now() >= until {
                bail!("QEMU was still {state} after {} s", patience.as_secs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes the stopped machine's whole state through `uri` (QEMU's
    /// migration, e.g. `exec:zstd > FILE`) and waits until it is written.
    pub fn save(&mut self, uri: &str, patience: Duration) -> Result<()> {
        self.execute("migrate", json!({ "uri": uri }))?;
        let until = Instant::now() + patience;
        loop {
            let info = self.execute("query-migrate", json!({}))?;
            match info.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some("failed" | "cancelled") => {
                    let why = info
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given");
                    bail!("QEMU could not save the machine's state: {why}");
                }
                _ if Instant::now() >= until => bail!(
                    "saving the machine's state took more than {} s",
                    patience.as_secs()
                ),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}
