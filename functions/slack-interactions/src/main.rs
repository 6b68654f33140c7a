use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::{LambdaEvent, run, service_fn};
use shared::wiring::aws::AwsStack;
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::aws::init_logging();
    let live = &AwsStack::from_env().await?;
    let secret =
        &shared::aws::secret_from_env(&live.base().sdk, "STEWARD_SLACK_SIGNING_SECRET_ARN").await?;
    run(service_fn(|e: LambdaEvent<ApiGatewayV2httpRequest>| {
        let span = tracing::info_span!("invocation", request_id = %e.context.request_id);
        async move {
            let stack = live.current().await;
            let slack = stack.slack.as_ref().map(|s| s.web.as_ref());
            slack_interactions::handle(&stack.engine, secret, slack, e.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        }
        .instrument(span)
    }))
    .await
}
