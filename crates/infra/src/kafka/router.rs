//! One consumer for several topics: each message goes to its topic's
//! handler. One group member per service instance (not one per topic), so a
//! rebalance moves all of an instance's partitions at once.

use super::consumer::{HandlingError, Incoming, MessageHandler};

/// Routes the messages of two topics to two handlers.
#[derive(Debug)]
pub struct TopicRouter<A, B> {
    pub first_topic: String,
    pub first: A,
    pub second_topic: String,
    pub second: B,
}

impl<A: MessageHandler, B: MessageHandler> MessageHandler for TopicRouter<A, B> {
    async fn handle(&self, message: &Incoming) -> Result<&'static str, HandlingError> {
        if message.topic == self.first_topic {
            self.first.handle(message).await
        } else if message.topic == self.second_topic {
            self.second.handle(message).await
        } else {
            Err(HandlingError::Permanent(format!(
                "no handler for topic {}",
                message.topic
            )))
        }
    }

    async fn handle_batch(&self, messages: &[Incoming]) -> Vec<&'static str> {
        // One partition's messages: one topic.
        match messages.first() {
            Some(first) if first.topic == self.first_topic => {
                self.first.handle_batch(messages).await
            }
            Some(first) if first.topic == self.second_topic => {
                self.second.handle_batch(messages).await
            }
            _ => Vec::new(),
        }
    }
}

/// A router with one more topic: `topic`'s messages go to `handler`, the
/// others to `rest`.
#[derive(Debug)]
pub struct AndTopic<R, C> {
    pub rest: R,
    pub topic: String,
    pub handler: C,
}

impl<R: MessageHandler, C: MessageHandler> MessageHandler for AndTopic<R, C> {
    async fn handle(&self, message: &Incoming) -> Result<&'static str, HandlingError> {
        if message.topic == self.topic {
            self.handler.handle(message).await
        } else {
            self.rest.handle(message).await
        }
    }

    async fn handle_batch(&self, messages: &[Incoming]) -> Vec<&'static str> {
        match messages.first() {
            Some(first) if first.topic == self.topic => self.handler.handle_batch(messages).await,
            Some(_) => self.rest.handle_batch(messages).await,
            None => Vec::new(),
        }
    }
}
