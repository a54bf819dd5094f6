//! `orion token`: mints an HS256 JWT with the configured shared secret, for operators and
//! scripts (an identity provider does this in production).

use crate::output::say;
use std::process::ExitCode;

use anyhow::Context;
use orion_services::secrets::ExposeSecret;

use crate::cli::TokenArgs;
use crate::settings::Settings;

pub fn mint(args: TokenArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    let jwt = &settings.auth.jwt;
    let secret = jwt.secret.as_ref().context(
        "`orion token` signs with auth.jwt.secret (HS256); set it (ORION__AUTH__JWT__SECRET), \
         or get tokens from the identity provider whose public key Orion verifies",
    )?;
    let role: orion_gateway::auth::Role = args.role.parse().map_err(anyhow::Error::msg)?;
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = serde_json::json!({
        "sub": args.subject,
        "role": role.as_str(),
        "iat": now,
        "exp": now + args.ttl_secs,
    });
    if let Some(scope) = args.scope {
        claims["scope"] = scope.into();
    }
    if let Some(iss) = &jwt.issuer {
        claims["iss"] = iss.clone().into();
    }
    if let Some(aud) = &jwt.audience {
        claims["aud"] = aud.clone().into();
    }
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
    .context("while signing the token")?;
    say!("{token}");
    Ok(ExitCode::SUCCESS)
}
