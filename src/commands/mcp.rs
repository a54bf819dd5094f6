//! `orion mcp`: the MCP server over stdio (`orion_gateway::mcp`), on `--server` or on an
//! Orion embedded for the session.

use std::process::ExitCode;

use anyhow::Context;
use orion_gateway::mcp::Orion;
use orion_services::secrets::ExposeSecret;
use rmcp::ServiceExt;

use crate::cli::McpArgs;
use crate::settings::Settings;

pub async fn serve(args: McpArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    // Without --server, an embedded Orion for the session (SQLite, the in-process bus).
    let (base, embedded) = match args.server {
        Some(server) => (server.trim_end_matches('/').to_owned(), None),
        None => {
            let mut settings = settings.clone();
            settings.server.listen = "127.0.0.1:0".parse().expect("an address");
            let crate::app::Embedded {
                services,
                node,
                gateway,
            } = crate::app::start_embedded(&settings).await?;
            let server = gateway.server.handle();
            actix_rt::spawn(gateway.server);
            (
                format!("http://{}", gateway.addr),
                Some((services, node, server)),
            )
        }
    };
    let token = settings
        .client
        .token
        .as_ref()
        .map(|t| t.expose_secret().to_owned());
    let orion = Orion::new(base, token).context("while making the HTTP client")?;
    let service = orion
        .serve(rmcp::transport::stdio())
        .await
        .context("while starting the MCP session")?;
    service.waiting().await.context("while serving MCP")?;
    // The session is over: the embedded Orion's server finishes what it answers, and stops.
    if let Some((_services, _node, server)) = embedded {
        server.stop(true).await;
    }
    Ok(ExitCode::SUCCESS)
}
