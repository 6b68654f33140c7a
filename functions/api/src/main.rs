use shared::inbound::ssf::{SsfReceiver, SsfSettings};
use shared::wiring::aws::AwsStack;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::aws::init_logging();
    let stack = AwsStack::from_env_with_idp().await?;
    let ssf = SsfSettings::from_env()?
        .map(SsfReceiver::new)
        .transpose()?
        .map(Arc::new);
    let people = shared::sign_in::IssuerSettings::from_env()?
        .map(shared::sign_in::PersonTokens::new)
        .transpose()?
        .map(Arc::new);
    lambda_http::run(api::router(&stack, ssf, people)).await
}
