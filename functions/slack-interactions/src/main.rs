use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::{LambdaEvent, run, service_fn};
use shared::wiring::aws::AwsStack;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::aws::init_logging();
    let stack = AwsStack::from_env().await?;
    let secret =
        shared::aws::secret_from_env(&stack.sdk, "STEWARD_SLACK_SIGNING_SECRET_ARN").await?;
    let slack = stack.slack.as_ref().map(|s| s.web.as_ref());
    let (engine, secret) = (&stack.engine, &secret);
    run(service_fn(
        |e: LambdaEvent<ApiGatewayV2httpRequest>| async move {
            slack_interactions::handle(engine, secret, slack, e.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
