//! Setting up SQS: a client from the AWS configuration chain, and the queue with its
//! dead-letter queue and redrive policy. Run once per deployment (`shoal sqs init`, or
//! Terraform), not on the hot path, so its calls are not counted.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;

use super::sdk_error;
use crate::queue::{QueueError, QueueResult};

/// Dead letters keep 14 days, SQS's longest retention.
const DLQ_RETENTION_SECS: u32 = 1_209_600;

/// An SQS client from the standard AWS configuration chain (environment, profile, IRSA web
/// identity; `AWS_ENDPOINT_URL` overrides the endpoint). `Err` when no region is configured.
pub async fn client_from_env() -> QueueResult<Client> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    if config.region().is_none() {
        return Err(QueueError::NoRegion);
    }
    Ok(Client::new(&config))
}

/// Creates (or finds) the queue `name` and its dead-letter queue `<name>-dlq`, and sets the
/// queue's redrive policy so that a message received `max_receives` times without being
/// deleted moves to the DLQ at its next receive. Idempotent: running it again keeps the
/// queues and their messages and updates `max_receives`. Returns `(queue_url, dlq_url)`.
///
/// Standard queues only (a `.fifo` name is refused).
#[tracing::instrument(skip(client), err)]
pub async fn init_queues(
    client: &Client,
    name: &str,
    max_receives: u32,
) -> QueueResult<(String, String)> {
    if name.is_empty() || name.ends_with(".fifo") {
        return Err(QueueError::InvalidQueueName(name.to_owned()));
    }
    let dlq_name = format!("{name}-dlq");
    let dlq_url = create_queue(client, &dlq_name).await?;
    client
        .set_queue_attributes()
        .queue_url(&dlq_url)
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            DLQ_RETENTION_SECS.to_string(),
        )
        .send()
        .await
        .map_err(|e| sdk_error("SetQueueAttributes", e))?;
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| sdk_error("GetQueueAttributes", e))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| QueueError::IncompleteResponse {
            operation: "GetQueueAttributes",
            missing: "QueueArn",
            subject: dlq_url.clone(),
        })?;

    let queue_url = create_queue(client, name).await?;
    let policy = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receives.max(1),
    });
    client
        .set_queue_attributes()
        .queue_url(&queue_url)
        .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
        .send()
        .await
        .map_err(|e| sdk_error("SetQueueAttributes", e))?;
    Ok((queue_url, dlq_url))
}

/// The URL of the dead-letter queue named by the queue's redrive policy, or `None` when it has
/// none (so `--queue <url>` alone is enough to find both).
#[tracing::instrument(skip(client), err)]
pub async fn dead_letter_queue_url(
    client: &Client,
    queue_url: &str,
) -> QueueResult<Option<String>> {
    let policy = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .map_err(|e| sdk_error("GetQueueAttributes", e))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::RedrivePolicy));
    let Some(policy) = policy else {
        return Ok(None);
    };
    let arn = serde_json::from_str::<Value>(&policy)
        .ok()
        .and_then(|p| p.get("deadLetterTargetArn")?.as_str().map(str::to_owned))
        .ok_or_else(|| QueueError::InvalidRedrivePolicy {
            queue_url: queue_url.to_owned(),
            policy: policy.clone(),
        })?;
    // arn:aws:sqs:<region>:<account>:<name>
    let parts: Vec<&str> = arn.split(':').collect();
    let [_, _, "sqs", _, account, name] = parts[..] else {
        return Err(QueueError::InvalidRedrivePolicy {
            queue_url: queue_url.to_owned(),
            policy,
        });
    };
    let url = client
        .get_queue_url()
        .queue_name(name)
        .queue_owner_aws_account_id(account)
        .send()
        .await
        .map_err(|e| sdk_error("GetQueueUrl", e))?
        .queue_url
        .ok_or_else(|| QueueError::IncompleteResponse {
            operation: "GetQueueUrl",
            missing: "QueueUrl",
            subject: arn.clone(),
        })?;
    Ok(Some(url))
}

/// The URL of queue `name`, created with the default attributes if it does not exist.
async fn create_queue(client: &Client, name: &str) -> QueueResult<String> {
    // Without attributes, CreateQueue returns an existing queue's URL whatever its attributes.
    client
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| sdk_error("CreateQueue", e))?
        .queue_url
        .ok_or_else(|| QueueError::IncompleteResponse {
            operation: "CreateQueue",
            missing: "QueueUrl",
            subject: name.to_owned(),
        })
}
