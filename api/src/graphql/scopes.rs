//! Scopes on GraphQL operations: each root field of a query, mutation or subscription needs a
//! [`Scope`], checked once the document is parsed, before anything runs.
//!
//! The [`Principal`] comes in the request's data (the binary puts it there from the bearer
//! token, or from `connection_init` on a WebSocket). Without one the API runs without tokens
//! and nothing is checked here; with tokens required, the HTTP layer has refused a request
//! without a valid token before it reaches the schema.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, ServerError, ServerResult, Variables};

use crate::auth::{Principal, Scope};

/// Code of an operation refused for want of a scope (HTTP's 403).
pub const FORBIDDEN: &str = "FORBIDDEN";

/// Which scope a root field needs.
pub type ScopeOf = fn(OperationType, &str) -> Scope;

/// The extension: add it with `SchemaBuilder::extension`.
#[derive(Debug, Clone, Copy)]
pub struct ScopeCheck(pub ScopeOf);

impl ExtensionFactory for ScopeCheck {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(*self)
    }
}

#[async_trait::async_trait]
impl Extension for ScopeCheck {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        if let Some(principal) = ctx.data_opt::<Principal>() {
            self.check(principal, &document)?;
        }
        Ok(document)
    }
}

impl ScopeCheck {
    /// Every operation of the document (not only the one to run: a document is allowed whole
    /// or not at all).
    fn check(&self, principal: &Principal, document: &ExecutableDocument) -> ServerResult<()> {
        for (_, operation) in document.operations.iter() {
            let kind = operation.node.ty;
            let mut fields = Vec::new();
            root_fields(document, &operation.node.selection_set.node, &mut fields, 0);
            for (name, pos) in fields {
                let scope = (self.0)(kind, name);
                if !principal.allows(scope) {
                    let mut error = ServerError::new(
                        format!(
                            "The token {:?} may not use `{name}`: it needs the `{scope}` scope.",
                            principal.name
                        ),
                        Some(pos),
                    );
                    let mut extensions = ErrorExtensionValues::default();
                    extensions.set("code", FORBIDDEN);
                    error.extensions = Some(extensions);
                    return Err(error);
                }
            }
        }
        Ok(())
    }
}

/// The root fields of a selection set, through fragments (at most a few levels of fragments
/// into fragments: validation refuses cycles afterwards).
fn root_fields<'a>(
    document: &'a ExecutableDocument,
    set: &'a SelectionSet,
    out: &mut Vec<(&'a str, async_graphql::Pos)>,
    nesting: usize,
) {
    if nesting > 32 {
        return;
    }
    for selection in &set.items {
        match &selection.node {
            Selection::Field(field) => out.push((field.node.name.node.as_str(), field.pos)),
            Selection::InlineFragment(fragment) => {
                root_fields(
                    document,
                    &fragment.node.selection_set.node,
                    out,
                    nesting + 1,
                );
            }
            Selection::FragmentSpread(spread) => {
                if let Some(fragment) = document.fragments.get(&spread.node.fragment_name.node) {
                    root_fields(
                        document,
                        &fragment.node.selection_set.node,
                        out,
                        nesting + 1,
                    );
                }
            }
        }
    }
}
