//! CEL over one message: the variables a rule sees, and evaluating it.

use std::collections::BTreeSet;
use std::sync::Arc;

use cel::{Context, Env, Program};
use serde_json::{Map, Value, json};

use super::{Direction, Scope};
use crate::mcp::jsonrpc::Kind;

/// What a message is, as rules see it.
#[derive(Debug)]
pub struct Facts<'a> {
    /// Which way it goes.
    pub direction: Direction,
    /// Request, notification or response.
    pub kind: Kind,
    /// Its method; for a response, the method of the request it answers.
    pub method: &'a str,
    /// The tool or prompt name or the resource URI it names (for a
    /// response, the request's); empty when none.
    pub name: &'a str,
    /// The whole message.
    pub message: &'a Value,
}

/// A compiled expression and the variables it reads.
#[derive(Debug)]
pub struct Expr {
    program: Program,
    reads: BTreeSet<&'static str>,
}

impl Expr {
    /// Compiles `source` (already checked by the crds' policy check).
    pub fn compile(path: &str, source: &str) -> Result<Self, shadowcat_crds::PolicyError> {
        let program = shadowcat_crds::compile_cel(path, source)?;
        let references = program.references();
        let reads = shadowcat_crds::CEL_VARIABLES
            .iter()
            .copied()
            .filter(|v| references.has_variable(v))
            .collect();
        Ok(Self { program, reads })
    }
}

/// The variables of one message, built once for all the expressions that
/// look at it, and only those any of them reads.
pub struct Activation<'e> {
    context: Context<'e, 'e>,
}

impl std::fmt::Debug for Activation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Activation")
    }
}

impl<'e> Activation<'e> {
    /// Binds what `reads` names.
    pub fn new(env: &Arc<Env>, reads: &BTreeSet<&'static str>, scope: &Scope, facts: &Facts<'_>) -> Self {
        let mut context = Context::with_env(env.clone());
        let empty = Value::Object(Map::new());
        let params = facts.message.get("params");
        for &variable in reads {
            let value: cel::Value = match variable {
                "direction" => facts.direction.as_str().into(),
                "kind" => kind_name(facts.kind).into(),
                "method" => facts.method.into(),
                "name" => facts.name.into(),
                "session" => scope.session.as_str().into(),
                "version" => scope.version.as_str().into(),
                "params" => to_cel(params.unwrap_or(&empty)),
                "arguments" => to_cel(params.and_then(|p| p.get("arguments")).unwrap_or(&empty)),
                "message" => to_cel(facts.message),
                "principal" => to_cel(&principal(scope)),
                _ => continue,
            };
            context.add_variable_from_value(variable, value);
        }
        Self { context }
    }

    /// Whether `expr` is true here. `Err` with the reason when it cannot be
    /// evaluated (a missing key, a type mismatch): that is not a match.
    pub fn matches(&self, expr: &Expr) -> Result<bool, String> {
        match expr.program.execute(&self.context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("the expression gave {other:?}, not a bool")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Every variable the expressions read.
pub fn union_of_reads<'a>(exprs: impl Iterator<Item = &'a Expr>) -> BTreeSet<&'static str> {
    exprs.flat_map(|e| e.reads.iter().copied()).collect()
}

fn to_cel(value: &Value) -> cel::Value {
    cel::to_value(value).unwrap_or(cel::Value::Null)
}

/// `principal`: who sent (or, on a session, is served by) the message.
fn principal(scope: &Scope) -> Value {
    match &scope.identity {
        Some(identity) => json!({
            "authenticated": true,
            "issuer": identity.issuer,
            "subject": identity.subject,
            "scopes": identity.scopes,
            "claims": identity.claims,
        }),
        None => json!({
            "authenticated": false,
            "issuer": "",
            "subject": "",
            "scopes": [],
            "claims": {},
        }),
    }
}

/// A kind as rules name it.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Request => "request",
        Kind::Notification => "notification",
        Kind::Response => "response",
    }
}
