//! `shoal sfn ...` (the Step Functions state machine for development and tests) and the
//! `--driver` options of `shoal orchestrator` and `shoal dev`.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use shoal_command_api::orchestrator::{Orchestrator, StepFunctionsConfig};
use shoal_infra::stepfunctions::{
    StepFunctions, clients_from_env, init_state_machine, moto_execute_state_machines,
};

#[derive(Debug, Subcommand)]
pub enum SfnCmd {
    /// Create (or update) the job state machine and its control queue `<NAME>-control`, and
    /// print the options that run the orchestrator with them. Uses the standard AWS chain
    /// (`AWS_ENDPOINT_URL` for moto). For development and tests; production uses Terraform.
    Init(SfnInitArgs),
    /// Print an execution's history: its events and the states it entered.
    History(SfnHistoryArgs),
}

#[derive(Debug, Args)]
pub struct SfnInitArgs {
    /// The state machine's name.
    #[arg(long, default_value = "shoal-job")]
    pub name: String,
    /// The IAM role the state machine runs as (it needs `sqs:SendMessage` on the control
    /// queue). moto accepts any role.
    #[arg(
        long,
        env = "SHOAL_SFN_ROLE_ARN",
        default_value = "arn:aws:iam::123456789012:role/shoal-step-functions"
    )]
    pub role_arn: String,
}

#[derive(Debug, Args)]
pub struct SfnHistoryArgs {
    /// The execution's ARN (the job's `execution { arn }` in GraphQL).
    pub execution_arn: String,
}

/// Which driver runs the jobs' lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Driver {
    /// The built-in driver: the orchestrator itself, from the event log.
    #[default]
    Builtin,
    /// AWS Step Functions: one execution per job (see docs/stepfunctions.md).
    Stepfunctions,
}

/// The orchestrator's driver and, for Step Functions, its state machine.
#[derive(Debug, Clone, Args)]
pub struct DriverArgs {
    /// Which driver runs the jobs' lifecycle.
    #[arg(long, env = "SHOAL_DRIVER", value_enum, default_value_t = Driver::Builtin)]
    pub driver: Driver,
    /// The job state machine's ARN (`shoal sfn init` prints it). With `--driver
    /// stepfunctions`.
    #[arg(long, env = "SHOAL_SFN_STATE_MACHINE")]
    pub state_machine: Option<String>,
    /// The control queue's URL (`shoal sfn init` prints it). With `--driver stepfunctions`.
    #[arg(long, env = "SHOAL_SFN_CONTROL_QUEUE")]
    pub control_queue: Option<String>,
    /// Seconds a step may go without a heartbeat before Step Functions retries it.
    #[arg(long, env = "SHOAL_SFN_HEARTBEAT_SECONDS", default_value_t = 60)]
    pub sfn_heartbeat_seconds: u32,
    /// Seconds the execution waits between two Monitor steps.
    #[arg(long, env = "SHOAL_SFN_WAIT_SECONDS", default_value_t = 10)]
    pub sfn_wait_seconds: u32,
    /// Seconds a Monitor step waits for the job to end before answering "still running"
    /// (each round costs three state transitions).
    #[arg(long, env = "SHOAL_SFN_MONITOR_HOLD_SECONDS", default_value_t = 300)]
    pub sfn_monitor_hold_seconds: u64,
}

impl DriverArgs {
    /// `orchestrator` with the chosen driver.
    pub async fn apply(&self, orchestrator: Orchestrator) -> anyhow::Result<Orchestrator> {
        if self.driver == Driver::Builtin {
            return Ok(orchestrator);
        }
        let (Some(state_machine), Some(control_queue)) = (&self.state_machine, &self.control_queue)
        else {
            anyhow::bail!(
                "--driver stepfunctions needs --state-machine and --control-queue \
                 (create them with `shoal sfn init`)"
            );
        };
        let sfn = StepFunctions::from_env(state_machine.clone(), control_queue.clone()).await?;
        let heartbeat_seconds = self.sfn_heartbeat_seconds.max(1);
        let config = StepFunctionsConfig {
            heartbeat_seconds,
            heartbeat_interval: Duration::from_secs(u64::from(heartbeat_seconds)) / 4,
            wait_seconds: self.sfn_wait_seconds,
            monitor_hold: Duration::from_secs(self.sfn_monitor_hold_seconds),
            moto_confirm_after: moto_address().map(|_| Duration::from_millis(500)),
            ..StepFunctionsConfig::default()
        };
        eprintln!("jobs run as executions of the Step Functions state machine {state_machine}");
        Ok(orchestrator.with_step_functions(sfn, config)?)
    }

    /// How `shoal dev` describes the driver.
    pub fn describe(&self) -> &'static str {
        match self.driver {
            Driver::Builtin => "built-in driver",
            Driver::Stepfunctions => "Step Functions driver",
        }
    }
}

pub async fn run(cmd: SfnCmd) -> anyhow::Result<()> {
    match cmd {
        SfnCmd::Init(args) => {
            // Before creating anything: moto keeps state machines created before the switch
            // apart, where the interpreter does not see them.
            switch_on_moto().await;
            let (sfn, sqs) = clients_from_env().await?;
            let setup = init_state_machine(&sfn, &sqs, &args.name, &args.role_arn)
                .await
                .with_context(|| format!("creating the state machine {:?}", args.name))?;
            eprintln!(
                "State machine and control queue ready. Run the orchestrator with them:\n\n  \
                 shoal dev --driver stepfunctions --state-machine {arn} --control-queue {url}\n\n\
                 (or shoal orchestrator ...; or SHOAL_DRIVER=stepfunctions SHOAL_SFN_STATE_MACHINE=... \
                 SHOAL_SFN_CONTROL_QUEUE=...)",
                arn = setup.state_machine_arn,
                url = setup.control_queue_url,
            );
            println!(
                "--driver stepfunctions --state-machine {} --control-queue {}",
                setup.state_machine_arn, setup.control_queue_url
            );
            Ok(())
        }
        SfnCmd::History(args) => {
            let (sfn, sqs) = clients_from_env().await?;
            let client = StepFunctions::new(sfn, sqs, "", "");
            let status = client.execution_status(&args.execution_arn).await?;
            println!("{} {status}", args.execution_arn);
            for event in client.execution_history(&args.execution_arn).await? {
                match event.state {
                    Some(state) => println!("  {:<28} {state}", event.event_type),
                    None => println!("  {}", event.event_type),
                }
            }
            Ok(())
        }
    }
}

/// With `AWS_ENDPOINT_URL` on loopback (moto), switches on moto's ASL interpreter, without
/// which its executions never run; says so either way.
async fn switch_on_moto() {
    let Some(address) = moto_address() else {
        return;
    };
    let endpoint = format!("http://{address}");
    match tokio::task::spawn_blocking(move || moto_execute_state_machines(&address)).await {
        Ok(Ok(())) => eprintln!("{endpoint}: moto's state machine interpreter is switched on"),
        Ok(Err(error)) => eprintln!(
            "{endpoint} did not take moto's execute_state_machine switch ({error}): \
             if it is moto, executions will not run"
        ),
        Err(error) => eprintln!("cannot switch moto's interpreter on: {error}"),
    }
}

/// `host:port` of `AWS_ENDPOINT_URL` when it is on loopback: an emulator (moto), whose
/// quirks the driver works around.
fn moto_address() -> Option<String> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").ok()?;
    endpoint
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/').to_owned())
        .filter(|a| a.starts_with("127.0.0.1:") || a.starts_with("localhost:"))
}
