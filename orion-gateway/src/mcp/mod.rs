//! Orion as a Model Context Protocol server, for editors and other agents: over stdio
//! (`orion mcp`) and over Streamable HTTP at `/mcp` on the gateway. Every API tool is a call
//! of one REST operation with the caller's credential (the client's token on stdio, the
//! request's own `Authorization` or `X-Api-Key` over HTTP), so the gate's roles apply as they
//! do to any client, and its input schema is that operation's, from the OpenAPI document
//! ([`api`]); the code tools read a local directory.

mod api;

use std::time::Duration;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, InitializeResult, JsonObject,
    ListResourceTemplatesResult, PaginatedRequestParams, ProgressNotificationParam,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, RequestMetaObject,
    ResourceContents, ResourceTemplate, ServerCapabilities,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::{Value, json};

/// The states a task rests in: done, or waiting for a person.
const RESTING: &[&str] = &[
    "completed",
    "failed",
    "cancelled",
    "awaiting_review",
    "awaiting_approval",
];

/// The MCP server: Orion's tools and resources over its REST API at `base`.
#[derive(Clone)]
pub struct Orion {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct CodePath {
    /// A local directory.
    path: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Outline {
    /// A local repository.
    repo: String,
    /// A file of it, relative to it.
    file: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Definition {
    /// A local repository.
    repo: String,
    /// The name to find.
    name: String,
}

/// An id a tool puts into a path: a UUID, or the reason it is not one (so no id can reach
/// another route).
fn id(raw: &str, what: &str) -> Result<uuid::Uuid, String> {
    crate::routes::path_id(raw.trim(), &format!("{what} id")).map_err(|e| e.to_string())
}

/// How long `wait_task` waits at most, and by default.
const MAX_WAIT_SECS: u64 = 3600;
const DEFAULT_WAIT_SECS: u64 = 300;

/// How long one call of the API may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The code tools read the files of the machine the server runs on: the caller's own over
/// stdio, the gateway's over HTTP, where they are refused (an analyze task reads a repository
/// the task policy allows).
fn local_only() -> Option<String> {
    CALLER.try_with(|_| ()).is_ok().then(|| {
        "the code tools read local files: use them through `orion mcp` on your machine, or \
         submit an analyze task"
            .to_owned()
    })
}

/// A tool's answer: the JSON, as text, or the API's refusal as an error result.
fn answer(result: Result<Value, String>) -> Result<CallToolResult, ErrorData> {
    Ok(match result {
        Ok(value) => CallToolResult::success(vec![ContentBlock::text(
            serde_json::to_string_pretty(&value).unwrap_or_default(),
        )]),
        Err(why) => CallToolResult::error(vec![ContentBlock::text(why)]),
    })
}

/// The credential of the MCP request being served over HTTP: the request's own headers.
#[derive(Clone, Debug, Default)]
struct Caller {
    authorization: Option<String>,
    api_key: Option<String>,
}

tokio::task_local! {
    static CALLER: Caller;
}

impl Caller {
    /// The credential headers of an MCP request that came over HTTP, if it did.
    fn of(context: &RequestContext<RoleServer>) -> Option<Self> {
        let parts = context.extensions.get::<http::request::Parts>()?;
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Some(Self {
            authorization: header("authorization"),
            api_key: header("x-api-key"),
        })
    }
}

impl Orion {
    /// A server that calls the API at `base` with `token` (stdio), or with each HTTP
    /// request's own credential.
    pub fn new(base: String, token: Option<String>) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(CALL_TIMEOUT).build()?,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Calls the API; `Err` is its problem (code and detail) or why it could not be reached.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        match CALLER.try_with(Caller::clone) {
            // Over HTTP: the caller's own credential, whatever it is.
            Ok(caller) => {
                if let Some(v) = caller.authorization {
                    request = request.header("authorization", v);
                }
                if let Some(v) = caller.api_key {
                    request = request.header("x-api-key", v);
                }
            }
            Err(_) => {
                if let Some(token) = &self.token {
                    request = request.bearer_auth(token);
                }
            }
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("the gateway could not be reached: {e}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("the gateway's answer did not arrive: {e}"))?;
        let value: Value = match serde_json::from_str(&text) {
            Ok(value) => value,
            Err(_) if status.is_success() => {
                return Err(format!(
                    "the gateway answered {status} with a body that is not JSON"
                ));
            }
            Err(_) => Value::Null,
        };
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!(
                "{} {}: {}",
                status.as_u16(),
                value["code"].as_str().unwrap_or("error"),
                value["detail"].as_str().unwrap_or_default()
            ))
        }
    }

    /// A resource: a task with its report, or a pull request's diff.
    async fn read(&self, uri: String) -> Result<ReadResourceResponse, ErrorData> {
        let not_found = |why: String| ErrorData::resource_not_found(why, None);
        let contents = if let Some(task) = uri.strip_prefix(TASK_RESOURCE) {
            let task = id(task, "a task").map_err(not_found)?;
            let body = self
                .get(&format!("/v1/tasks/{task}"))
                .await
                .map_err(not_found)?;
            ResourceContents::text(
                serde_json::to_string_pretty(&body).unwrap_or_default(),
                &uri,
            )
            .with_mime_type("application/json")
        } else if let Some(pull) = uri
            .strip_prefix(PULL_RESOURCE)
            .and_then(|rest| rest.strip_suffix("/diff"))
        {
            let pull = id(pull, "a pull request").map_err(not_found)?;
            let body = self
                .get(&format!("/v1/pulls/{pull}"))
                .await
                .map_err(not_found)?;
            ResourceContents::text(body["diff"].as_str().unwrap_or_default(), &uri)
                .with_mime_type("text/x-diff")
        } else {
            return Err(not_found(format!("`{uri}` is no resource of Orion's")));
        };
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Calls the API's operation `id` with a tool's arguments.
    async fn operate(&self, id: &str, arguments: JsonObject) -> Result<Value, String> {
        let operation = api::operation(id);
        let (path, body) = operation.request(arguments)?;
        self.call(operation.method.clone(), &path, body).await
    }

    /// Sends the events of the task at `task` (its path) after `seen` as progress notifications, where the client asked
    /// for them (a progress token); returns the last event's `seq`.
    async fn notify(
        &self,
        task: &str,
        seen: u64,
        progress: Option<&rmcp::model::ProgressToken>,
        peer: &Peer<RoleServer>,
    ) -> u64 {
        let Some(token) = progress else {
            return seen;
        };
        let Ok(events) = self.get(&format!("{task}/events?after={seen}")).await else {
            return seen;
        };
        let mut last = seen;
        for e in events["items"].as_array().into_iter().flatten() {
            last = last.max(e["seq"].as_u64().unwrap_or(last));
            let message = e["message"]
                .as_str()
                .or(e["type"].as_str())
                .unwrap_or("event");
            let _ = peer
                .notify_progress(
                    ProgressNotificationParam::new(token.clone(), last as f64)
                        .with_message(message),
                )
                .await;
        }
        last
    }
}

#[tool_router]
impl Orion {
    #[tool(
        description = "Submit a task to Orion (analyze, design, develop, review, test, ci, release, or a declared kind); returns the task",
        input_schema = api::input_schema("submitTask", &[])
    )]
    async fn submit_task(&self, arguments: JsonObject) -> Result<CallToolResult, ErrorData> {
        answer(self.operate("submitTask", arguments).await)
    }

    #[tool(
        description = "Tasks, newest first, by status, kind or repository",
        input_schema = api::input_schema("listTasks", &[])
    )]
    async fn list_tasks(&self, arguments: JsonObject) -> Result<CallToolResult, ErrorData> {
        answer(self.operate("listTasks", arguments).await)
    }

    #[tool(
        description = "A task: its status, result (the report) or error",
        input_schema = api::input_schema("getTask", &[])
    )]
    async fn get_task(&self, arguments: JsonObject) -> Result<CallToolResult, ErrorData> {
        answer(self.operate("getTask", arguments).await)
    }

    #[tool(
        description = "Wait until a task completes, fails, is cancelled or waits for a person; its events arrive as progress notifications",
        input_schema = api::input_schema("getTask", &[(
            "timeout_secs",
            json!({
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_WAIT_SECS,
                "description": "How long to wait at most, in seconds (default 300)",
            }),
        )])
    )]
    async fn wait_task(
        &self,
        mut arguments: JsonObject,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let wait = match arguments.remove("timeout_secs") {
            None | Some(Value::Null) => DEFAULT_WAIT_SECS,
            Some(v) => match v.as_u64() {
                Some(secs) => secs.clamp(1, MAX_WAIT_SECS),
                None => return answer(Err("`timeout_secs` must be a whole number".into())),
            },
        };
        let task = match api::operation("getTask").request(arguments) {
            Ok((path, _)) => path,
            Err(why) => return answer(Err(why)),
        };
        let progress = meta.get_progress_token();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        let mut seen = 0u64;
        loop {
            seen = self.notify(&task, seen, progress.as_ref(), &peer).await;
            let state = match self.get(&task).await {
                Ok(state) => state,
                Err(e) => return answer(Err(e)),
            };
            if state["status"]
                .as_str()
                .is_some_and(|s| RESTING.contains(&s))
            {
                // The events logged between the last look and the status that ends the wait.
                self.notify(&task, seen, progress.as_ref(), &peer).await;
                return answer(Ok(state));
            }
            if tokio::time::Instant::now() >= deadline {
                return answer(Err(format!(
                    "task {} is still {} after {wait} s",
                    state["id"], state["status"]
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    #[tool(
        description = "Every function an analyze task measured (file, lines, parameters, cyclomatic and cognitive complexity, nesting), a page at a time",
        input_schema = api::input_schema("taskFunctions", &[])
    )]
    async fn task_functions(&self, arguments: JsonObject) -> Result<CallToolResult, ErrorData> {
        answer(self.operate("taskFunctions", arguments).await)
    }

    #[tool(
        description = "Cancel a task",
        input_schema = api::input_schema("cancelTask", &[])
    )]
    async fn cancel_task(&self, arguments: JsonObject) -> Result<CallToolResult, ErrorData> {
        answer(self.operate("cancelTask", arguments).await)
    }

    #[tool(
        description = "The pull requests Orion opened, newest first",
        input_schema = api::input_schema("listPulls", &[])
    )]
    async fn list_pulls(&self, arguments: JsonObject) -> Result<CallToolResult, ErrorData> {
        answer(self.operate("listPulls", arguments).await)
    }

    #[tool(
        description = "A pull request: its diff, test verdict and reviews",
        input_schema = api::input_schema("getPull", &[])
    )]
    async fn get_pull(&self, arguments: JsonObject) -> Result<CallToolResult, ErrorData> {
        answer(self.operate("getPull", arguments).await)
    }

    #[tool(
        description = "Review a pull request: approve (merges it) or request_changes (with a comment)",
        input_schema = api::input_schema("reviewPull", &[])
    )]
    async fn review_pull(&self, arguments: JsonObject) -> Result<CallToolResult, ErrorData> {
        answer(self.operate("reviewPull", arguments).await)
    }

    #[tool(
        description = "Model usage and cost, summed by task, agent, model or day",
        input_schema = api::input_schema("usage", &[])
    )]
    async fn usage(&self, arguments: JsonObject) -> Result<CallToolResult, ErrorData> {
        answer(self.operate("usage", arguments).await)
    }

    #[tool(
        description = "Every function of a local directory's code with its lines, parameters, cyclomatic and cognitive complexity and nesting"
    )]
    async fn code_metrics(
        &self,
        Parameters(c): Parameters<CodePath>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Some(refused) = local_only() {
            return answer(Err(refused));
        }
        let rows = tokio::task::spawn_blocking(move || {
            orion_services::code::function_rows(std::path::Path::new(&c.path), 2)
        })
        .await
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        answer(rows.map(|r| json!(r)).map_err(|e| e.to_string()))
    }

    #[tool(description = "The definitions of one file of a local repository")]
    async fn code_outline(
        &self,
        Parameters(o): Parameters<Outline>,
    ) -> Result<CallToolResult, ErrorData> {
        use orion_services::code::CodeIntel;
        if let Some(refused) = local_only() {
            return answer(Err(refused));
        }
        let index = orion_services::code::TreeSitterIntel
            .symbols(std::path::Path::new(&o.repo))
            .await;
        answer(
            index
                .map(|i| {
                    json!(
                        i.outline(&o.file)
                            .iter()
                            .map(|t| json!({ "line": t.line, "kind": t.kind, "name": t.name }))
                            .collect::<Vec<_>>()
                    )
                })
                .map_err(|e| e.to_string()),
        )
    }

    #[tool(description = "Where a name is defined in a local repository")]
    async fn code_definition(
        &self,
        Parameters(d): Parameters<Definition>,
    ) -> Result<CallToolResult, ErrorData> {
        use orion_services::code::CodeIntel;
        if let Some(refused) = local_only() {
            return answer(Err(refused));
        }
        let index = orion_services::code::TreeSitterIntel
            .symbols(std::path::Path::new(&d.repo))
            .await;
        answer(
            index
                .map(|i| {
                    json!(
                        i.definition(&d.name)
                            .iter()
                            .map(|l| json!({ "path": l.path, "line": l.line, "kind": l.kind }))
                            .collect::<Vec<_>>()
                    )
                })
                .map_err(|e| e.to_string()),
        )
    }
}

/// The resources: a task's report, a pull request's diff.
const TASK_RESOURCE: &str = "orion://tasks/";
const PULL_RESOURCE: &str = "orion://pulls/";

#[tool_handler]
impl ServerHandler for Orion {
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let caller = Caller::of(&context);
        let call = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        match caller {
            Some(caller) => CALLER.scope(caller, Self::tool_router().call(call)).await,
            None => Self::tool_router().call(call).await,
        }
    }

    async fn list_resource_templates(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(format!("{TASK_RESOURCE}{{id}}"), "task")
                .with_description("A task: its status and its report (result) or error, as JSON")
                .with_mime_type("application/json"),
            ResourceTemplate::new(format!("{PULL_RESOURCE}{{id}}/diff"), "pull request diff")
                .with_description("The diff of one of Orion's pull requests")
                .with_mime_type("text/x-diff"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        match Caller::of(&context) {
            Some(caller) => CALLER.scope(caller, self.read(request.uri)).await,
            None => self.read(request.uri).await,
        }
    }

    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("orion", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Orion: submit software tasks (analyze, design, develop, review, test, ci, release) \
                 to Orion's agents, wait for them, read and review the pull requests they open; \
                 measure local code.",
        )
    }
}

/// The Streamable HTTP transport of the MCP server, as the gateway mounts it at `/mcp`.
pub type HttpService = rmcp::transport::streamable_http_server::StreamableHttpService<
    Orion,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
>;

/// The MCP server over Streamable HTTP for a gateway at `base`. The `Host` check is off: every
/// request carries the caller's own credential, which a page on another host cannot send.
pub fn http_service(base: String) -> HttpService {
    let config = rmcp::transport::streamable_http_server::StreamableHttpServerConfig::default()
        .disable_allowed_hosts();
    HttpService::new(
        move || Orion::new(base.clone(), None).map_err(std::io::Error::other),
        Default::default(),
        config,
    )
}

/// `/mcp`: an actix request handed to the MCP service (a tower service on `http` 1 types),
/// and its answer (JSON, or an event stream) handed back.
pub async fn serve(
    req: actix_web::HttpRequest,
    body: actix_web::web::Bytes,
    state: actix_web::web::Data<crate::AppState>,
) -> actix_web::HttpResponse {
    use futures_util::StreamExt;
    use http_body_util::BodyExt;
    let Some(service) = state.mcp.clone() else {
        return actix_web::HttpResponse::NotFound().finish();
    };
    let mut request = http::Request::builder()
        .method(req.method().as_str())
        .uri(req.uri().to_string());
    for (name, value) in req.headers() {
        request = request.header(name.as_str(), value.as_bytes());
    }
    let Ok(request) = request.body(http_body_util::Full::new(body)) else {
        return actix_web::HttpResponse::BadRequest().finish();
    };
    let mut service = service;
    let Ok(response) = tower_service::Service::call(&mut service, request).await;
    let (parts, body) = response.into_parts();
    let status = actix_web::http::StatusCode::from_u16(parts.status.as_u16())
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut answer = actix_web::HttpResponse::build(status);
    for (name, value) in &parts.headers {
        answer.append_header((name.as_str(), value.as_bytes()));
    }
    let frames = body
        .into_data_stream()
        .map(|chunk| chunk.map_err(|e| actix_web::error::ErrorInternalServerError(e.to_string())));
    answer.streaming(frames)
}
