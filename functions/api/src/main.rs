use shared::inbound::ssf::{SsfReceiver, SsfSettings};
use shared::wiring::aws::AwsStack;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::aws::init_logging();
    let ssf = SsfSettings::from_env()?
        .map(SsfReceiver::new)
        .transpose()?
        .map(Arc::new);
    let people = shared::sign_in::IssuerSettings::from_env()?
        .map(shared::sign_in::PersonTokens::new)
        .transpose()?
        .map(Arc::new);
    // The identity provider is the worker's: what needs it is queued.
    let stack = AwsStack::from_env().await?;
    let dashboard = api::DashboardSettings::from_env()?
        .map(|d| d.dashboard(stack.base(), people.as_ref()))
        .transpose()?;
    let live =
        stack.map(move |stack| api::router(&stack, ssf.clone(), people.clone(), dashboard.clone()));
    lambda_http::run(api::LiveRouter::new(live)).await
}
