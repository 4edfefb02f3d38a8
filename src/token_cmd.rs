//! `shoal token create|list|revoke`: API tokens, against the database (see docs/auth.md).
//! Each creation and revocation is an event in the log (`TokenCreated`, `TokenRevoked` in
//! `token-<id>`), with the operating-system user who ran the command as its actor.

use chrono::Utc;
use clap::{Args, Subcommand};
use serde_json::json;
use shoal_api::auth::{IssuedToken, parse_scopes};
use shoal_domain::Event;
use shoal_domain::events::{TokenCreated, TokenRevoked};
use shoal_infra::eventlog::NewEvent;
use shoal_infra::tokens::{StoredToken, TokenStore};

use crate::roles::DatabaseArgs;

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token and print it (once: only its hash is stored).
    Create(CreateArgs),
    /// List the tokens (never their secrets), revoked ones included.
    List(DbOnly),
    /// Revoke a token: it is refused from the next request on.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The token's name: the actor recorded on every command it issues. Unique for good
    /// (a revoked token's name is not reused).
    #[arg(long)]
    pub name: String,
    /// What it may do: read, submit, operate (cancel, retry, redrive), worker (the REST task
    /// transitions), admin (all). Repeat or separate with commas.
    #[arg(long = "scope", required = true, value_name = "SCOPE")]
    pub scopes: Vec<String>,
    #[command(flatten)]
    pub db: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct DbOnly {
    #[command(flatten)]
    pub db: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The token's name.
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub db: DatabaseArgs,
}

/// Longest token name, in characters.
const MAX_NAME_CHARS: usize = 100;

pub async fn run(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create(args) => {
            let name = args.name.trim().to_owned();
            anyhow::ensure!(
                !name.is_empty()
                    && name.chars().count() <= MAX_NAME_CHARS
                    && !name.chars().any(char::is_control),
                "--name: 1 to {MAX_NAME_CHARS} printable characters"
            );
            let scopes = parse_scopes(&args.scopes)?;
            let database = args.db.open().await?;
            let issued = IssuedToken::generate();
            let now = Utc::now();
            let scopes: Vec<String> = scopes.iter().map(|s| s.as_str().to_owned()).collect();
            let created = Event::TokenCreated(TokenCreated {
                token_id: issued.token_id,
                name: name.clone(),
                scopes: scopes.clone(),
                at: now,
            });
            let stored = StoredToken {
                token_id: issued.token_id,
                name: name.clone(),
                scopes: scopes.clone(),
                secret_sha256: issued.secret_sha256.clone(),
                created_at: now,
                revoked_at: None,
            };
            let result = TokenStore::new(database.clone())
                .create(&stored, encode(&created, "create_token"))
                .await;
            database.close().await;
            result?;
            eprintln!(
                "created token {name:?} with scopes {}; it is shown this once, keep it secret:",
                scopes.join(", ")
            );
            println!("{}", issued.text);
            Ok(())
        }
        TokenCmd::List(args) => {
            let database = args.db.open().await?;
            let tokens = TokenStore::new(database.clone()).list().await;
            database.close().await;
            let tokens = tokens?;
            if tokens.is_empty() {
                eprintln!("no tokens (create one with `shoal token create`)");
                return Ok(());
            }
            println!("{:<24} {:<36} {:<28} REVOKED", "NAME", "SCOPES", "CREATED");
            for token in tokens {
                println!(
                    "{:<24} {:<36} {:<28} {}",
                    token.name,
                    token.scopes.join(","),
                    token.created_at.to_rfc3339(),
                    token
                        .revoked_at
                        .map_or_else(|| "-".to_owned(), |at| at.to_rfc3339())
                );
            }
            Ok(())
        }
        TokenCmd::Revoke(args) => {
            let database = args.db.open().await?;
            let name = args.name.trim().to_owned();
            let now = Utc::now();
            let result = TokenStore::new(database.clone())
                .revoke(&name, now, |token_id| {
                    let revoked = Event::TokenRevoked(TokenRevoked {
                        token_id,
                        name: name.clone(),
                        at: now,
                    });
                    encode(&revoked, "revoke_token")
                })
                .await;
            database.close().await;
            result?;
            eprintln!("revoked token {name:?}");
            Ok(())
        }
    }
}

/// The event as stored, with the operating-system user as its actor.
fn encode(event: &Event, command: &str) -> NewEvent {
    let encoded = event.encode();
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    NewEvent {
        event_type: encoded.event_type.to_owned(),
        schema_version: encoded.schema_version,
        data: encoded.data,
        metadata: json!({ "command": command, "actor": format!("cli:{user}") }),
    }
}
