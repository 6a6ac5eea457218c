//! `starling chat`: a small terminal client of the WebSocket protocol, to try Starling by hand
//! (type a line, press Enter) or from a script (`--send`, `--exit-after`).

use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

/// Options of `starling chat`.
pub struct Options {
    pub server: String,
    pub token: String,
    pub conversation: String,
    pub send: Vec<String>,
    pub exit_after: Option<usize>,
    pub timeout: Option<u64>,
}

fn show(ev: &Value, me: &str) -> Option<String> {
    let ty = ev["type"].as_str()?;
    Some(match ty {
        "message.new" => {
            let m = &ev["message"];
            let who = m["sender_id"].as_str().unwrap_or("system");
            let body = m["text"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| m["custom"].to_string());
            format!("[{}] {who}: {body}", m["seq"])
        }
        "message.updated" => format!(
            "[{}] (edited) {}",
            ev["message"]["seq"],
            ev["message"]["text"].as_str().unwrap_or("")
        ),
        "message.deleted" => format!("[{}] (deleted)", ev["message"]["seq"]),
        "read" if ev["user_id"] != me => {
            format!("({} read up to #{})", ev["user_id"].as_str()?, ev["seq"])
        }
        "typing" if ev["user_id"] != me && ev["state"] == "start" => {
            format!("({} is typing…)", ev["user_id"].as_str()?)
        }
        "presence" if ev["user_id"] != me => {
            format!(
                "({} is {})",
                ev["user_id"].as_str()?,
                if ev["online"] == true {
                    "online"
                } else {
                    "offline"
                }
            )
        }
        "reaction.added" => format!(
            "({} reacted {} to a message)",
            ev["user_id"].as_str()?,
            ev["emoji"].as_str()?
        ),
        "error" => format!(
            "error {}: {}",
            ev["code"].as_str()?,
            ev["message"].as_str()?
        ),
        _ => return None,
    })
}

/// Runs the client until stdin ends, `--exit-after` messages arrived, or the timeout.
pub async fn run(o: Options) -> anyhow::Result<()> {
    let base = o.server.trim_end_matches('/');
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_owned()
    };
    let url = format!("{ws_base}/v1/connect?token={}", o.token);
    let (stream, _) = match tokio_tungstenite::connect_async(&url).await {
        Ok(s) => s,
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let body = res
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            bail!(
                "the server refused the connection ({}): {body}",
                res.status()
            );
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {ws_base}/v1/connect")),
    };
    let (mut sink, mut read) = stream.split();
    let hello: Value = loop {
        match read.next().await {
            Some(Ok(Message::Text(t))) => break serde_json::from_str(t.as_str())?,
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("the server closed the connection before saying hello"),
        }
    };
    let me = hello["user_id"].as_str().unwrap_or("?").to_owned();
    println!("connected as {me} to conversation {}", o.conversation);

    let deadline = o
        .timeout
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut next_id = 0u64;
    let mut pending = Vec::new();
    for text in &o.send {
        next_id += 1;
        let id = format!("c{next_id}");
        let f = json!({"type": "send", "id": id, "conversation_id": o.conversation, "client_msg_id": format!("{}-{id}", hello["connection_id"].as_str().unwrap_or("")), "text": text});
        sink.send(Message::Text(f.to_string().into())).await?;
        pending.push(id);
    }
    let interactive = o.send.is_empty();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = interactive;
    let mut received = 0usize;
    loop {
        // Done once nothing awaits an ack and: enough messages arrived (`--exit-after`), or
        // there is nothing more to send in a scripted run.
        let done = match o.exit_after {
            Some(n) => received >= n,
            None => !interactive,
        };
        if pending.is_empty() && done {
            break;
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => bail!("timed out"),
            line = stdin.next_line(), if stdin_open => match line? {
                Some(l) if !l.trim().is_empty() => {
                    next_id += 1;
                    let id = format!("c{next_id}");
                    let f = json!({"type": "send", "id": id, "conversation_id": o.conversation, "text": l});
                    sink.send(Message::Text(f.to_string().into())).await?;
                    pending.push(id);
                }
                Some(_) => {}
                None => {
                    // End of input: stop, unless we wait for messages (`--exit-after`).
                    stdin_open = false;
                    if pending.is_empty() && o.exit_after.is_none() { break; }
                }
            },
            msg = read.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str())?;
                    match v["type"].as_str() {
                        Some("ack") => {
                            pending.retain(|p| v["id"] != p.as_str());
                            if let Some(seq) = v["result"]["message"]["seq"].as_i64() {
                                println!("sent #{seq}");
                            }
                        }
                        Some("error") => {
                            pending.retain(|p| v["id"] != p.as_str());
                            eprintln!("error {}: {}", v["code"].as_str().unwrap_or("?"), v["message"].as_str().unwrap_or(""));
                        }
                        _ => {
                            let mine = v["message"]["sender_id"] == me.as_str();
                            if v["type"] == "message.new" && v["message"]["conversation_id"] == o.conversation.as_str() && !mine {
                                received += 1;
                            }
                            if !(v["type"] == "message.new" && mine)
                                && let Some(line) = show(&v, &me)
                            {
                                println!("{line}");
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    println!("connection closed by the server: {}", c.map(|c| format!("{} {}", u16::from(c.code), c.reason)).unwrap_or_default());
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => break,
            },
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    Ok(())
}
