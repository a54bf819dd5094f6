//! One module per command; each takes its arguments and the loaded settings.

mod client;
mod code;
mod dataset;
mod eval;
mod mcp;
mod model;
mod run;
mod serve;
mod token;

use std::process::ExitCode;

use crate::cli::Command;
use crate::settings::Settings;

pub async fn dispatch(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up(args) => serve::up(args, settings).await,
        Command::Run(args) => run::run(args, settings).await,
        Command::Gateway => serve::gateway(settings).await,
        Command::Node(args) => serve::node(args, settings).await,
        Command::Migrate(args) => serve::migrate(args, settings).await,
        Command::Submit(args) => client::submit(args, settings).await,
        Command::Watch(args) => client::watch(args, settings).await,
        Command::Pulls(args) => client::pulls(args, settings).await,
        Command::Review(args) => client::review(args, settings).await,
        Command::Usage(args) => client::usage(args, settings).await,
        Command::Token(args) => token::mint(args, settings),
        Command::Bench(crate::cli::BenchCommand::Analyze(args)) => {
            orion_bench::analysis::analyze(args, &mut std::io::stdout())
        }
        Command::Bench(crate::cli::BenchCommand::Cluster(args)) => {
            orion_bench::cluster::cluster(
                args,
                settings.bus_servers(),
                settings.redis.url.clone(),
                &mut std::io::stdout(),
            )
            .await
        }
        Command::Bench(crate::cli::BenchCommand::Llm(args)) => {
            orion_bench::llm::llm(args, settings.redis.url.clone(), &mut std::io::stdout()).await
        }
        Command::Bench(crate::cli::BenchCommand::Context(args)) => {
            orion_bench::context::context(args, &mut std::io::stdout())
        }
        Command::Bench(crate::cli::BenchCommand::NatsEcho(args)) => {
            orion_bench::cluster::nats_echo(args, &mut std::io::stdout()).await
        }
        Command::Code(command) => code::run(command).await,
        Command::Mcp(args) => mcp::serve(args, settings).await,
        Command::Eval(crate::cli::EvalCommand::Context(args)) => eval::context(args, settings),
        Command::Eval(crate::cli::EvalCommand::Corpus(args)) => eval::corpus(args, settings),
        Command::Model(crate::cli::ModelCommand::Fetch(args)) => {
            model::fetch(args, settings).map(|()| ExitCode::SUCCESS)
        }
        Command::Dataset(crate::cli::DatasetCommand::Export(args)) => {
            dataset::export(args, settings).await
        }
        Command::Bench(crate::cli::BenchCommand::Model(args)) => {
            model::bench(args, settings).map(|()| ExitCode::SUCCESS)
        }
    }
}
