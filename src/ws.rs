//! The limits of GraphQL over WebSocket (`/graphql` subscriptions), each with a clear end:
//!
//! - at most `max_connections` connections at once: one more is refused with 503 before the
//!   upgrade;
//! - at most `max_message_bytes` per message from the client: a larger one closes the
//!   connection with 1009 (message too big);
//! - at most `max_subscriptions` subscriptions per connection: one more is answered with an
//!   error (`TOO_MANY_SUBSCRIPTIONS`), the connection stays;
//! - `connection_init` within `init_timeout`: otherwise the connection is closed with 4408
//!   (the `graphql-transport-ws` code for it);
//! - a client that stops reading is dropped: messages to it wait in a small bounded buffer,
//!   and a send that has not completed within `send_timeout` closes the connection, so a
//!   slow reader costs neither memory nor a subscription forever.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::channel::mpsc;
use futures::{Sink, SinkExt, StreamExt};
use shoal_query_api::graphql::SubscriptionSlots;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::graphql::ApiSchema;

/// Messages to one client that may wait while it reads slowly.
const OUTGOING_BUFFER: usize = 16;

/// Close code of `graphql-transport-ws` for a missing `connection_init`.
pub const CLOSE_INIT_TIMEOUT: u16 = 4408;
/// Close code for a message over the size limit (RFC 6455: message too big).
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code for a client that does not read what it is sent (RFC 6455: policy violation).
pub const CLOSE_NOT_READING: u16 = 1008;

/// The WebSocket limits (see the module docs).
#[derive(Debug, Clone)]
pub struct WsLimits {
    pub max_connections: usize,
    pub max_message_bytes: usize,
    pub max_subscriptions: usize,
    pub init_timeout: Duration,
    pub send_timeout: Duration,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            max_connections: 1000,
            max_message_bytes: 64 * 1024,
            max_subscriptions: 20,
            init_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
        }
    }
}

/// The open connections, counted against [`WsLimits::max_connections`].
#[derive(Debug, Clone)]
pub struct Connections {
    slots: Arc<Semaphore>,
    pub limits: WsLimits,
}

impl Connections {
    pub fn new(limits: WsLimits) -> Self {
        Connections {
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
        }
    }

    /// A place for one more connection, or `None` at the limit.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }
}

/// Serves GraphQL on an upgraded socket within the limits; `_permit` is the connection's place,
/// held until it ends.
pub async fn serve<F, R>(
    socket: WebSocket,
    schema: ApiSchema,
    protocol: GraphQLProtocol,
    limits: WsLimits,
    _permit: OwnedSemaphorePermit,
    on_init: F,
) where
    F: FnOnce(serde_json::Value) -> R + Send + 'static,
    R: std::future::Future<Output = async_graphql::Result<Data>> + Send + 'static,
{
    let (sink, input) = socket.split();
    let (outgoing, queued) = mpsc::channel::<Message>(OUTGOING_BUFFER);
    let (init_tx, init_rx) = tokio::sync::oneshot::channel::<()>();
    let (close_tx, close_rx) = tokio::sync::oneshot::channel::<CloseFrame>();
    let max_bytes = limits.max_message_bytes;
    // The client's messages: the first `connection_init` is noted for the watchdog; an
    // error (a message over the size limit) ends the input with a close frame that says why.
    let mut init_tx = Some(init_tx);
    let mut close_tx = Some(close_tx);
    let input = input
        .map(move |message| {
            match &message {
                Ok(Message::Text(text)) if init_tx.is_some() && is_connection_init(text) => {
                    if let Some(tx) = init_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Err(error) => {
                    if let Some(tx) = close_tx.take() {
                        let _ = tx.send(close_frame_for(error, max_bytes));
                    }
                }
                Ok(_) => {}
            }
            message
        })
        .take_while(|m| futures::future::ready(m.is_ok()));
    let data = {
        let mut data = Data::default();
        data.insert(SubscriptionSlots::new(limits.max_subscriptions));
        data
    };
    let graphql = GraphQLWebSocket::new_with_pair(outgoing, input, schema, protocol)
        .with_data(data)
        .on_connection_init(on_init)
        .serve();
    let forward = forward(queued, sink, &limits, init_rx, close_rx);
    tokio::pin!(graphql, forward);
    tokio::select! {
        // The GraphQL side ended (the input ended or failed): what it queued, and the close
        // frame that says why, still go out; the queue's end ends the forwarding.
        () = &mut graphql => forward.await,
        () = &mut forward => {}
    }
}

fn is_connection_init(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .is_ok_and(|m| m.get("type").and_then(|t| t.as_str()) == Some("connection_init"))
}

fn close_frame_for(error: &axum::Error, max_bytes: usize) -> CloseFrame {
    let text = error.to_string();
    if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
        CloseFrame {
            code: CLOSE_TOO_BIG,
            reason: format!("message larger than {max_bytes} bytes (--ws-max-message-bytes)")
                .into(),
        }
    } else {
        CloseFrame {
            code: 1002,
            reason: "protocol error".into(),
        }
    }
}

/// Sends what the GraphQL side queues to the client until one of: the queue ends; a send does
/// not complete within `send_timeout` (the client stopped reading: closed with 1008); no
/// `connection_init` arrived within `init_timeout` (4408); the input failed (`close`).
pub(crate) async fn forward<S>(
    mut queued: mpsc::Receiver<Message>,
    mut sink: S,
    limits: &WsLimits,
    init: tokio::sync::oneshot::Receiver<()>,
    close: tokio::sync::oneshot::Receiver<CloseFrame>,
) where
    S: Sink<Message> + Unpin,
{
    let init_deadline = tokio::time::sleep(limits.init_timeout);
    tokio::pin!(init_deadline, init, close);
    let mut initialised = false;
    let mut input_failed_checked = false;
    let end = |code: u16, reason: String| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    loop {
        tokio::select! {
            biased;
            frame = &mut close, if !input_failed_checked => {
                input_failed_checked = true;
                if let Ok(frame) = frame {
                    let _ = tokio::time::timeout(
                        limits.send_timeout,
                        sink.send(Message::Close(Some(frame))),
                    )
                    .await;
                    return;
                }
                // The input ended without an error: keep sending what is queued.
            }
            message = queued.next() => {
                let Some(message) = message else { return };
                match tokio::time::timeout(limits.send_timeout, sink.send(message)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::info!(
                            timeout = ?limits.send_timeout,
                            "a WebSocket client stopped reading: closing its connection"
                        );
                        // The close frame may not get through either: give it a moment only.
                        let reason = format!(
                            "not reading: a message waited more than {:?} to be sent",
                            limits.send_timeout
                        );
                        let _ = tokio::time::timeout(
                            Duration::from_millis(100),
                            sink.send(end(CLOSE_NOT_READING, reason)),
                        )
                        .await;
                        return;
                    }
                }
            }
            result = &mut init, if !initialised => {
                // Sent on `connection_init`; dropped unsent when the input ends first.
                if result.is_ok() {
                    initialised = true;
                } else {
                    return;
                }
            }
            () = &mut init_deadline, if !initialised => {
                let reason = "Connection initialisation timeout".to_owned();
                let _ = tokio::time::timeout(
                    limits.send_timeout,
                    sink.send(end(CLOSE_INIT_TIMEOUT, reason)),
                )
                .await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    /// A client that never reads: every send stays pending.
    struct Stuck;

    impl Sink<Message> for Stuck {
        type Error = ();
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            Poll::Pending
        }
        fn start_send(self: Pin<&mut Self>, _: Message) -> Result<(), ()> {
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            Poll::Pending
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            Poll::Pending
        }
    }

    fn limits() -> WsLimits {
        WsLimits {
            init_timeout: Duration::from_secs(3600),
            send_timeout: Duration::from_millis(200),
            ..WsLimits::default()
        }
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_dropped_not_buffered() {
        let (mut tx, rx) = mpsc::channel::<Message>(OUTGOING_BUFFER);
        let (init_tx, init_rx) = tokio::sync::oneshot::channel();
        init_tx.send(()).unwrap();
        let (_close_tx, close_rx) = tokio::sync::oneshot::channel();
        let forwarding = tokio::spawn(async move {
            forward(rx, Stuck, &limits(), init_rx, close_rx).await;
        });
        // The producer fills the small buffer, then waits: nothing piles up in memory.
        let mut sent = 0;
        while tx.try_send(Message::Text("x".into())).is_ok() {
            sent += 1;
        }
        assert!(sent <= OUTGOING_BUFFER + 2, "{sent} queued");
        // Then the connection is dropped within the send timeout.
        tokio::time::timeout(Duration::from_secs(5), forwarding)
            .await
            .expect("dropped after the send timeout")
            .unwrap();
        assert!(tx.try_send(Message::Text("y".into())).is_err());
    }

    #[tokio::test]
    async fn no_connection_init_closes_with_4408() {
        let (_tx, rx) = mpsc::channel::<Message>(OUTGOING_BUFFER);
        let (_init_tx, init_rx) = tokio::sync::oneshot::channel();
        let (_close_tx, close_rx) = tokio::sync::oneshot::channel();
        let (sink, mut sent) = mpsc::unbounded::<Message>();
        let limits = WsLimits {
            init_timeout: Duration::from_millis(100),
            ..limits()
        };
        tokio::time::timeout(
            Duration::from_secs(5),
            forward(rx, sink.sink_map_err(|_| ()), &limits, init_rx, close_rx),
        )
        .await
        .expect("closed at the init timeout");
        match sent.next().await {
            Some(Message::Close(Some(frame))) => {
                assert_eq!(frame.code, CLOSE_INIT_TIMEOUT);
                assert_eq!(frame.reason.as_str(), "Connection initialisation timeout");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connection_init_is_recognised() {
        assert!(is_connection_init(
            r#"{"type":"connection_init","payload":{}}"#
        ));
        assert!(!is_connection_init(r#"{"type":"subscribe"}"#));
        assert!(!is_connection_init("not json"));
    }
}
