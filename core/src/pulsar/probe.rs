//! Probes of what a role may do on the bus: each tries one thing and says whether the broker
//! allowed it. The attack tests use them (here and in the control plane's and the end-to-end
//! suites) to show that the grants of [`super::provision_cell`] hold.

use std::time::Duration;

use pulsar::consumer::InitialPosition;
use pulsar::{ConsumerOptions, SubType};

use super::{Client, PulsarAuth, connect};

/// How long an attempt the broker should refuse may take. A refusal arrives in milliseconds;
/// a timeout is counted as refused too (the client got nothing), but named as such.
pub const ATTEMPT: Duration = Duration::from_secs(15);

/// Builds a producer on `topic` and sends one message (`Ok` only if the broker stored it).
pub async fn try_produce(client: &Client, topic: &str) -> Result<(), String> {
    let fut = async {
        let mut p = client
            .producer()
            .with_topic(topic)
            .with_name(format!("attack-{}", ulid::Ulid::new()))
            .build()
            .await
            .map_err(|e| e.to_string())?;
        let receipt = p
            .send_non_blocking(pulsar::producer::Message {
                payload: b"forged".to_vec(),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        receipt.await.map_err(|e| e.to_string())?;
        Ok(())
    };
    tokio::time::timeout(ATTEMPT, fut)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// Subscribes to `topic` (`Ok` if the broker let the subscription be made).
pub async fn try_consume(client: &Client, topic: &str) -> Result<(), String> {
    let fut = async {
        client
            .consumer()
            .with_topic(topic)
            .with_subscription(format!("attack-{}", ulid::Ulid::new()))
            .with_subscription_type(SubType::Exclusive)
            .with_options(
                ConsumerOptions::default().with_initial_position(InitialPosition::Earliest),
            )
            .build::<Vec<u8>>()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(ATTEMPT, fut)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// Connects with `auth`.
pub async fn try_connect(url: &str, auth: &PulsarAuth) -> Result<Client, String> {
    connect(url, auth, ATTEMPT).await.map_err(|e| e.to_string())
}
