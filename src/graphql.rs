//! The one GraphQL schema of `shoal dev` / `shoal serve`: query-api's queries (plus
//! command-api's dead-letter queries), command-api's mutations and query-api's subscriptions,
//! with the depth and complexity limits, at `/graphql`.
//!
//! `/graphql` routes: `POST` runs queries and mutations (single or batched); `GET` with a
//! WebSocket upgrade serves subscriptions (`graphql-transport-ws` and the legacy `graphql-ws`
//! subprotocols); a plain `GET` serves GraphiQL, whose subscriptions use the same URL.
//!
//! The SDL is committed as `docs/schema.graphql` (`shoal schema` prints it; a test compares).

use std::sync::Arc;

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql::parser::types::OperationType;
use async_graphql::{Data, MergedObject, Schema};
use async_graphql_axum::{GraphQLBatchRequest, GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
use axum::extract::State;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use shoal_api::auth::{Principal, Scope};
use shoal_command_api::commands::CommandService;
use shoal_command_api::graphql::{
    DeadLettersQuery, DepthLimit, MAX_DEPTH, MAX_INTROSPECTION_DEPTH, MutationRoot,
    tag_request_errors,
};
use shoal_infra::eventlog::EventLog;
use shoal_infra::readmodel::ReadModelStore;
use shoal_query_api::graphql::{LiveConfig, QueryRoot, ReadContext, SubscriptionRoot};

use crate::auth::Authenticator;

/// Most complex query accepted: each field counts 1, so a page of 50 jobs with 10 fields
/// each fits, and a page of 1000 with every field does not.
pub const MAX_COMPLEXITY: usize = 2000;

/// The queries of the combined schema.
#[derive(Debug, Default, MergedObject)]
#[graphql(name = "Query")]
pub struct Query(QueryRoot, DeadLettersQuery);

pub type ApiSchema = Schema<Query, MutationRoot, SubscriptionRoot>;

fn builder() -> async_graphql::SchemaBuilder<Query, MutationRoot, SubscriptionRoot> {
    Schema::build(Query::default(), MutationRoot, SubscriptionRoot)
        .extension(DepthLimit {
            application: MAX_DEPTH,
            introspection: MAX_INTROSPECTION_DEPTH,
        })
        .extension(shoal_api::graphql::IntRange)
        .extension(shoal_api::graphql::ScopeCheck(scope_of))
        .limit_complexity(MAX_COMPLEXITY)
        .extension(shoal_query_api::metrics::GraphqlMetrics)
}

/// The scope each root field needs from a token (see docs/auth.md): queries and
/// subscriptions `read`; `submitJob` `submit`; cancel, retry and redrive `operate`; any other
/// mutation `admin`.
pub fn scope_of(kind: OperationType, field: &str) -> Scope {
    match (kind, field) {
        (OperationType::Mutation, "submitJob") => Scope::Submit,
        (OperationType::Mutation, "cancelJob" | "retryFailedTasks" | "redriveDeadLetters") => {
            Scope::Operate
        }
        (OperationType::Mutation, _) => Scope::Admin,
        (OperationType::Query | OperationType::Subscription, _) => Scope::Read,
    }
}

/// The schema with what its resolvers read.
pub fn schema(
    service: CommandService,
    store: ReadModelStore,
    log: Arc<dyn EventLog>,
    live: LiveConfig,
) -> ApiSchema {
    builder()
        .data(service)
        .data(ReadContext { store, log })
        .data(live)
        .finish()
}

/// The SDL (needs no database).
pub fn sdl() -> String {
    builder().finish().sdl()
}

/// `/graphql`: see the module docs. With `auth` (tokens required), a WebSocket must present a
/// valid token in `connection_init` (or its upgrade's `Authorization`), and every operation is
/// checked against its token's scopes.
pub fn router(schema: ApiSchema, auth: Option<Arc<Authenticator>>) -> Router {
    Router::new()
        .route("/graphql", get(graphiql_or_websocket).post(execute))
        .with_state(GraphqlState { schema, auth })
}

#[derive(Clone)]
struct GraphqlState {
    schema: ApiSchema,
    auth: Option<Arc<Authenticator>>,
}

async fn execute(
    State(GraphqlState { schema, .. }): State<GraphqlState>,
    principal: Option<Extension<Principal>>,
    request: GraphQLBatchRequest,
) -> GraphQLResponse {
    let mut request = request.into_inner();
    if let Some(Extension(principal)) = principal {
        request = request.data(principal);
    }
    let mut response = schema.execute_batch(request).await;
    match &mut response {
        async_graphql::BatchResponse::Single(one) => tag_request_errors(&mut one.errors),
        async_graphql::BatchResponse::Batch(many) => {
            for one in many {
                tag_request_errors(&mut one.errors);
            }
        }
    }
    response.into()
}

/// `connection_init` of a GraphQL WebSocket: with tokens required, the payload's token (or the
/// upgrade's) must be valid, else the server closes the connection (1002, with the reason); its
/// principal is then the data of every operation on the connection.
async fn connection_init(
    auth: Option<Arc<Authenticator>>,
    upgraded: Option<Principal>,
    payload: serde_json::Value,
) -> async_graphql::Result<Data> {
    let mut data = Data::default();
    let Some(auth) = auth else {
        return Ok(data);
    };
    let principal = match (
        crate::auth::connection_init_authorization(&payload),
        upgraded,
    ) {
        (Some(authorization), _) => auth.authenticate(Some(&authorization)).await,
        (None, Some(principal)) => Ok(principal),
        (None, None) => auth.authenticate(None).await,
    };
    match principal {
        Ok(principal) => {
            data.insert(principal);
            Ok(data)
        }
        Err(error) => {
            tracing::info!(%error, "GraphQL WebSocket refused at connection_init");
            Err(async_graphql::Error::new(error.to_string()))
        }
    }
}

async fn graphiql_or_websocket(
    State(GraphqlState { schema, auth }): State<GraphqlState>,
    principal: Option<Extension<Principal>>,
    protocol: Result<GraphQLProtocol, axum::http::StatusCode>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match (protocol, upgrade) {
        (Ok(protocol), Ok(upgrade)) => upgrade
            .protocols(ALL_WEBSOCKET_PROTOCOLS)
            .on_upgrade(move |stream| {
                let upgraded = principal.map(|Extension(p)| p);
                GraphQLWebSocket::new(stream, schema, protocol)
                    .on_connection_init(move |payload| connection_init(auth, upgraded, payload))
                    .serve()
            })
            .into_response(),
        _ => Html(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql")
                .finish(),
        )
        .into_response(),
    }
}
