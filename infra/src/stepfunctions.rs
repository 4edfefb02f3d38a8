//! AWS Step Functions (aws-sdk-sfn) and its control queue (SQS): the adapter of the
//! orchestrator's Step Functions driver.
//!
//! The job's state machine (`infra/deploy/stepfunctions/job.asl.json`) runs one execution per
//! job. Its states that need Shoal's code are callbacks: `sqs:sendMessage.waitForTaskToken`
//! puts a [`ControlMessage`] with a task token on the control queue and waits; the orchestrator
//! receives it ([`StepFunctions::receive`]), does the step, and answers with
//! [`StepFunctions::succeed`] or [`StepFunctions::fail`], sending
//! [`StepFunctions::heartbeat`] meanwhile. Activities are not used (moto does not serve
//! `GetActivityTask`, and the callback pattern needs no long poll on Step Functions).
//!
//! This module decides nothing: it starts, stops and answers what the driver tells it to.

use std::time::Duration;

use aws_sdk_sfn::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use serde::Deserialize;
use serde_json::Value;

/// The job's state machine, with `${control_queue_url}` where the control queue's URL goes
/// (Terraform's `templatefile` fills the same placeholder).
pub const JOB_STATE_MACHINE_ASL: &str = include_str!("../deploy/stepfunctions/job.asl.json");

/// The state machine's definition for a control queue: [`JOB_STATE_MACHINE_ASL`] with its
/// placeholder filled (the URL is JSON-escaped).
pub fn job_state_machine_definition(control_queue_url: &str) -> String {
    let quoted = serde_json::to_string(control_queue_url).unwrap_or_default();
    let escaped = quoted.trim_matches('"');
    JOB_STATE_MACHINE_ASL.replace("${control_queue_url}", escaped)
}

/// What failed when talking to Step Functions or the control queue. Every variant is
/// transient for the driver: it logs, backs off and tries again (the state machine retries
/// the step or times it out).
#[derive(Debug, thiserror::Error)]
pub enum SfnError {
    /// An AWS call failed (throttling, network, a missing state machine or queue, ...).
    #[error("{operation}: {message}")]
    Aws {
        /// The API operation, e.g. `StartExecution`.
        operation: &'static str,
        /// The error code, when AWS gave one (e.g. `TaskTimedOut`).
        code: Option<String>,
        /// What AWS said.
        message: String,
    },
}

impl SfnError {
    /// The AWS error code, if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            SfnError::Aws { code, .. } => code.as_deref(),
        }
    }

    /// The task token is no longer waited for (its step timed out, or the execution ended):
    /// nothing to answer any more.
    pub fn is_stale_token(&self) -> bool {
        matches!(
            self.code(),
            Some("TaskTimedOut" | "TaskDoesNotExist" | "InvalidToken")
        )
    }
}

fn aws_error<E>(operation: &'static str, error: E) -> SfnError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    SfnError::Aws {
        operation,
        code: error.code().map(str::to_owned),
        message: match error.message() {
            Some(message) => message.to_owned(),
            None => DisplayErrorContext(&error).to_string(),
        },
    }
}

/// A step the state machine asks the orchestrator to do: the body of a control message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ControlMessage {
    /// The state: `CreateTasks`, `EnqueueTasks`, `Monitor`, `CompleteJob`, `FailJob` or
    /// `RecordFailure`.
    pub step: String,
    /// The job (a UUID, as the execution's input gave it).
    pub job_id: String,
    /// The token to answer with.
    pub task_token: String,
    /// Which try of the state this is (0 = first).
    #[serde(default)]
    pub retry_count: u32,
    /// The execution.
    #[serde(default)]
    pub execution_arn: String,
    /// For `RecordFailure`: the error the failed step ended with (`{"Error", "Cause"}`).
    #[serde(default)]
    pub error: Option<Value>,
}

/// One execution's event, as `GetExecutionHistory` lists it (for tests and the CLI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEvent {
    /// E.g. `TaskStateEntered`, `TaskStateExited`, `ExecutionSucceeded`.
    pub event_type: String,
    /// The state's name, for state events.
    pub state: Option<String>,
}

/// Step Functions and the control queue of one state machine.
#[derive(Debug, Clone)]
pub struct StepFunctions {
    sfn: aws_sdk_sfn::Client,
    sqs: aws_sdk_sqs::Client,
    state_machine_arn: String,
    control_queue_url: String,
}

impl StepFunctions {
    /// The state machine `state_machine_arn` and its control queue.
    pub fn new(
        sfn: aws_sdk_sfn::Client,
        sqs: aws_sdk_sqs::Client,
        state_machine_arn: impl Into<String>,
        control_queue_url: impl Into<String>,
    ) -> Self {
        StepFunctions {
            sfn,
            sqs,
            state_machine_arn: state_machine_arn.into(),
            control_queue_url: control_queue_url.into(),
        }
    }

    /// With clients from the standard AWS chain (`AWS_REGION`, `AWS_ENDPOINT_URL`, ...).
    pub async fn from_env(
        state_machine_arn: impl Into<String>,
        control_queue_url: impl Into<String>,
    ) -> Result<Self, SfnError> {
        let (sfn, sqs) = clients_from_env().await?;
        Ok(StepFunctions::new(
            sfn,
            sqs,
            state_machine_arn,
            control_queue_url,
        ))
    }

    /// The state machine's ARN.
    pub fn state_machine_arn(&self) -> &str {
        &self.state_machine_arn
    }

    /// The control queue's URL.
    pub fn control_queue_url(&self) -> &str {
        &self.control_queue_url
    }

    /// The ARN the execution `name` of this state machine has (or will have).
    pub fn execution_arn(&self, name: &str) -> String {
        format!(
            "{}:{name}",
            self.state_machine_arn
                .replacen(":stateMachine:", ":execution:", 1)
        )
    }

    /// Starts the execution `name` with `input`; its ARN. Idempotent: the same name with the
    /// same input gives the running execution again, and a name already used by an ended
    /// execution gives that execution's ARN (one execution per name, ever).
    #[tracing::instrument(skip(self, input), err)]
    pub async fn start_execution(&self, name: &str, input: &Value) -> Result<String, SfnError> {
        let started = self
            .sfn
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(name)
            .input(input.to_string())
            .send()
            .await;
        match started {
            Ok(output) => Ok(output.execution_arn),
            Err(error) if error.code() == Some("ExecutionAlreadyExists") => {
                Ok(self.execution_arn(name))
            }
            Err(error) => Err(aws_error("StartExecution", error)),
        }
    }

    /// Stops a running execution. An execution that has ended already, or does not exist, is
    /// left as it is (`Ok`).
    #[tracing::instrument(skip(self), err)]
    pub async fn stop_execution(&self, execution_arn: &str, cause: &str) -> Result<(), SfnError> {
        let stopped = self
            .sfn
            .stop_execution()
            .execution_arn(execution_arn)
            .error("Shoal.JobCancelled")
            .cause(cause)
            .send()
            .await;
        match stopped {
            Ok(_) => Ok(()),
            Err(error)
                if matches!(
                    error.code(),
                    Some("ExecutionDoesNotExist" | "ExecutionNotRunning")
                ) =>
            {
                Ok(())
            }
            Err(error) => Err(aws_error("StopExecution", error)),
        }
    }

    /// The execution's status: `RUNNING`, `SUCCEEDED`, `FAILED`, `TIMED_OUT`, `ABORTED`.
    pub async fn execution_status(&self, execution_arn: &str) -> Result<String, SfnError> {
        let described = self
            .sfn
            .describe_execution()
            .execution_arn(execution_arn)
            .send()
            .await
            .map_err(|e| aws_error("DescribeExecution", e))?;
        Ok(described.status.as_str().to_owned())
    }

    /// The execution's whole history, oldest first.
    pub async fn execution_history(
        &self,
        execution_arn: &str,
    ) -> Result<Vec<HistoryEvent>, SfnError> {
        let mut events = Vec::new();
        let mut next = None;
        loop {
            let page = self
                .sfn
                .get_execution_history()
                .execution_arn(execution_arn)
                .set_next_token(next)
                .max_results(1000)
                .send()
                .await
                .map_err(|e| aws_error("GetExecutionHistory", e))?;
            for event in page.events {
                let state = event
                    .state_entered_event_details
                    .as_ref()
                    .map(|d| d.name.clone())
                    .or_else(|| {
                        event
                            .state_exited_event_details
                            .as_ref()
                            .map(|d| d.name.clone())
                    });
                events.push(HistoryEvent {
                    event_type: event.r#type.as_str().to_owned(),
                    state,
                });
            }
            next = page.next_token;
            if next.is_none() {
                return Ok(events);
            }
        }
    }

    /// Up to `max` (1..=10) control messages, waiting up to `wait` for the first. They are
    /// deleted from the queue at once: from here on the state machine's heartbeat and timeout
    /// take care of a step whose orchestrator dies (it retries the step with a new message).
    /// A message that is not a [`ControlMessage`] is logged and deleted.
    pub async fn receive(&self, max: i32, wait: Duration) -> Result<Vec<ControlMessage>, SfnError> {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.control_queue_url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(i32::try_from(wait.as_secs().min(20)).unwrap_or(20))
            .send()
            .await
            .map_err(|e| aws_error("ReceiveMessage", e))?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut parsed = Vec::with_capacity(messages.len());
        let mut entries = Vec::with_capacity(messages.len());
        for (i, message) in messages.into_iter().enumerate() {
            let body = message.body.unwrap_or_default();
            match parse_control(&body) {
                Ok(control) => parsed.push(control),
                Err(error) => {
                    tracing::warn!(%error, body, "dropping an unreadable control message")
                }
            }
            if let Some(receipt) = message.receipt_handle {
                entries.push(
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .build()
                        .map_err(|e| SfnError::Aws {
                            operation: "DeleteMessageBatch",
                            code: None,
                            message: e.to_string(),
                        })?,
                );
            }
        }
        if !entries.is_empty() {
            self.sqs
                .delete_message_batch()
                .queue_url(&self.control_queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| aws_error("DeleteMessageBatch", e))?;
        }
        Ok(parsed)
    }

    /// Answers a step: it succeeded with `output` (a JSON object, the state's result).
    pub async fn succeed(&self, task_token: &str, output: &Value) -> Result<(), SfnError> {
        self.sfn
            .send_task_success()
            .task_token(task_token)
            .output(output.to_string())
            .send()
            .await
            .map_err(|e| aws_error("SendTaskSuccess", e))?;
        Ok(())
    }

    /// Answers a step: it failed with `error` (the name the state machine's `Retry` and
    /// `Catch` match) and `cause`.
    pub async fn fail(&self, task_token: &str, error: &str, cause: &str) -> Result<(), SfnError> {
        self.sfn
            .send_task_failure()
            .task_token(task_token)
            .error(error)
            .cause(cause)
            .send()
            .await
            .map_err(|e| aws_error("SendTaskFailure", e))?;
        Ok(())
    }

    /// Tells Step Functions the step is still being worked on.
    pub async fn heartbeat(&self, task_token: &str) -> Result<(), SfnError> {
        self.sfn
            .send_task_heartbeat()
            .task_token(task_token)
            .send()
            .await
            .map_err(|e| aws_error("SendTaskHeartbeat", e))?;
        Ok(())
    }
}

/// A control message's body. The SQS integration sends the state's `MessageBody` object as
/// JSON text; a body that is itself a JSON string holding the object is read too.
fn parse_control(body: &str) -> Result<ControlMessage, serde_json::Error> {
    match serde_json::from_str::<ControlMessage>(body) {
        Ok(message) => Ok(message),
        Err(error) => match serde_json::from_str::<String>(body) {
            Ok(inner) => serde_json::from_str(&inner),
            Err(_) => Err(error),
        },
    }
}

/// Step Functions and SQS clients from the standard AWS chain. Errors without a region.
pub async fn clients_from_env() -> Result<(aws_sdk_sfn::Client, aws_sdk_sqs::Client), SfnError> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    if config.region().is_none() {
        return Err(SfnError::Aws {
            operation: "configuration",
            code: None,
            message: "no AWS region is configured: set AWS_REGION (or a profile's region)".into(),
        });
    }
    Ok((
        aws_sdk_sfn::Client::new(&config),
        aws_sdk_sqs::Client::new(&config),
    ))
}

/// What `shoal sfn init` created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfnSetup {
    /// The state machine's ARN (`--state-machine`).
    pub state_machine_arn: String,
    /// The control queue's URL (`--control-queue`).
    pub control_queue_url: String,
}

/// Creates (or updates) the control queue `<name>-control` and the state machine `name`
/// running [`JOB_STATE_MACHINE_ASL`] with `role_arn`. Idempotent: run again, it updates the
/// definition and keeps both. For development and tests; production uses Terraform.
#[tracing::instrument(skip(sfn, sqs), err)]
pub async fn init_state_machine(
    sfn: &aws_sdk_sfn::Client,
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    role_arn: &str,
) -> Result<SfnSetup, SfnError> {
    let control_queue_url = sqs
        .create_queue()
        .queue_name(format!("{name}-control"))
        .send()
        .await
        .map_err(|e| aws_error("CreateQueue", e))?
        .queue_url
        .unwrap_or_default();
    let definition = job_state_machine_definition(&control_queue_url);
    let created = sfn
        .create_state_machine()
        .name(name)
        .definition(&definition)
        .role_arn(role_arn)
        .r#type(aws_sdk_sfn::types::StateMachineType::Standard)
        .send()
        .await;
    let state_machine_arn = match created {
        Ok(created) => created.state_machine_arn,
        Err(error) if error.code() == Some("StateMachineAlreadyExists") => {
            let arn = find_state_machine(sfn, name)
                .await?
                .ok_or_else(|| SfnError::Aws {
                    operation: "ListStateMachines",
                    code: None,
                    message: format!("state machine {name} exists but is not listed"),
                })?;
            sfn.update_state_machine()
                .state_machine_arn(&arn)
                .definition(&definition)
                .role_arn(role_arn)
                .send()
                .await
                .map_err(|e| aws_error("UpdateStateMachine", e))?;
            arn
        }
        Err(error) => return Err(aws_error("CreateStateMachine", error)),
    };
    Ok(SfnSetup {
        state_machine_arn,
        control_queue_url,
    })
}

async fn find_state_machine(
    sfn: &aws_sdk_sfn::Client,
    name: &str,
) -> Result<Option<String>, SfnError> {
    let mut next = None;
    loop {
        let page = sfn
            .list_state_machines()
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| aws_error("ListStateMachines", e))?;
        if let Some(found) = page.state_machines.iter().find(|m| m.name == name) {
            return Ok(Some(found.state_machine_arn.clone()));
        }
        next = page.next_token;
        if next.is_none() {
            return Ok(None);
        }
    }
}

/// Switches on moto_server's ASL interpreter (`POST /moto-api/config
/// {"stepfunctions": {"execute_state_machine": true}}`; without it moto's executions stay
/// RUNNING forever). `address` is moto's `host:port`. A blocking call: one request to an
/// emulator on loopback (development and tests only) does not warrant an HTTP client.
pub fn moto_execute_state_machines(address: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let body = r#"{"stepfunctions":{"execute_state_machine":true}}"#;
    let request = format!(
        "POST /moto-api/config HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    if response.starts_with("HTTP/1.1 2") || response.starts_with("HTTP/1.0 2") {
        Ok(())
    } else {
        let status = response.lines().next().unwrap_or("no answer").to_owned();
        Err(std::io::Error::other(status))
    }
}

/// The AWS console's page of an execution (the region is read from the ARN).
pub fn console_url(execution_arn: &str) -> Option<String> {
    let mut parts = execution_arn.split(':');
    let (Some("arn"), Some(_partition), Some("states"), Some(region)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if region.is_empty() {
        return None;
    }
    Some(format!(
        "https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{execution_arn}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definition_is_valid_json_with_the_queue_filled_in() {
        let url = "http://127.0.0.1:5000/123456789012/shoal-control";
        let definition: Value =
            serde_json::from_str(&job_state_machine_definition(url)).expect("JSON");
        let states = definition["States"].as_object().expect("states");
        for state in [
            "CreateTasks",
            "EnqueueTasks",
            "Monitor",
            "CompleteJob",
            "FailJob",
        ] {
            assert_eq!(
                states[state]["Parameters"]["QueueUrl"], url,
                "{state} sends to the control queue"
            );
            assert_eq!(
                states[state]["Resource"],
                "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
            );
            assert!(states[state]["Retry"].is_array(), "{state} retries");
            assert!(states[state]["Catch"].is_array(), "{state} catches");
        }
        assert_eq!(states["Wait"]["Next"], "Monitor", "Monitor loops with Wait");
        assert_eq!(states["Failed"]["Type"], "Fail");
        assert!(!job_state_machine_definition(url).contains("${"));
    }

    #[test]
    fn control_messages_are_read_as_objects_or_as_json_strings() {
        let body = r#"{"step":"Monitor","job_id":"j","task_token":"t","retry_count":1,"execution_arn":"a"}"#;
        let expected = parse_control(body).expect("object");
        assert_eq!(expected.step, "Monitor");
        assert_eq!(expected.retry_count, 1);
        let quoted = serde_json::to_string(body).expect("string");
        assert_eq!(parse_control(&quoted).expect("string"), expected);
        assert!(parse_control("nonsense").is_err());
    }

    #[test]
    fn console_urls_follow_the_region_of_the_arn() {
        assert_eq!(
            console_url("arn:aws:states:eu-west-1:123456789012:execution:shoal-job:abc").as_deref(),
            Some(
                "https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1#/v2/executions/details/arn:aws:states:eu-west-1:123456789012:execution:shoal-job:abc"
            )
        );
        assert_eq!(console_url("not an arn"), None);
    }
}
