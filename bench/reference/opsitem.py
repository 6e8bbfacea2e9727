"""Python reference: the boto3 function operators deploy today to turn CloudWatch alarms
(via SNS) into OpsCenter OpsItems. ALARM creates an OpsItem deduplicated by the alarm
ARN; OK resolves the open one. Run by `bench/run.py` through the same local Lambda
Runtime API, endpoints and events as alarm-to-incident:

    python -m awslambdaric opsitem.handler     (cwd bench/reference)

The client is created once per container, as AWS recommends. Endpoints come from the
SDK's standard env (AWS_ENDPOINT_URL_SSM), as for the Rust functions.
"""

import json
import logging

import boto3

logger = logging.getLogger()
logger.setLevel(logging.INFO)

ssm = boto3.client("ssm")
SEVERITY = {"ALARM": "2"}


def handler(event, context):
    results = []
    for record in event.get("Records", []):
        alarm = json.loads(record["Sns"]["Message"])
        name, arn, state = alarm["AlarmName"], alarm["AlarmArn"], alarm["NewStateValue"]
        if state == "ALARM":
            try:
                out = ssm.create_ops_item(
                    Title=name[:1024],
                    Description=(alarm.get("NewStateReason") or name)[:2048],
                    Source="CloudWatch",
                    Severity=SEVERITY["ALARM"],
                    Category="Availability",
                    OperationalData={
                        "/aws/dedup": {"Type": "SearchableString",
                                       "Value": json.dumps({"dedupString": arn})},
                        "/aws/resources": {"Type": "SearchableString",
                                           "Value": json.dumps([{"arn": arn}])},
                    },
                )
                results.append({"created": out["OpsItemId"]})
            except ssm.exceptions.OpsItemAlreadyExistsException:
                results.append({"duplicate": arn})
        elif state == "OK":
            found = ssm.describe_ops_items(OpsItemFilters=[
                {"Key": "Title", "Values": [name[:1024]], "Operator": "Equal"},
                {"Key": "Status", "Values": ["Open"], "Operator": "Equal"},
            ])["OpsItemSummaries"]
            for item in found:
                ssm.update_ops_item(OpsItemId=item["OpsItemId"], Status="Resolved")
                results.append({"resolved": item["OpsItemId"]})
        logger.info("alarm %s %s: %s", name, state, results[-1:] or "nothing to do")
    return {"results": results}
