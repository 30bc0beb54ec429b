# Gate `training_zone`: where the model was trained. With placement receipts (the default requirement,
# `provenance.require_receipts`), every replica of every attempt of the training job ran, as receipts signed by a
# configured scheduler key prove, in a permitted training zone that satisfies the model's residency class, and the
# job succeeded. A self-declared `training_zone` counts only where the config does not require receipts.
package sovra.gates.training_zone

import rego.v1

deny contains "the model's provenance carries no placement receipts; push it with --training-job ID (the scheduler's receipts) or --receipts FILE (the promotion config requires receipts: provenance.require_receipts)" if {
	input.training.receipts_required
	input.training.source != "receipts"
}

deny contains "the provenance does not name the training zone (`training_zone`); push the model with --provenance, or with --training-job ID to prove it with the scheduler's receipts" if {
	not input.training.receipts_required
	input.training.source == "none"
}

deny contains msg if {
	some e in input.training.receipt_errors
	msg := sprintf("placement receipts refused: %s", [e])
}

deny contains msg if {
	count(input.training.receipt_errors) == 0
	some zone in input.training.zones
	not zone in input.training.permitted_zones
	msg := sprintf("the model was trained in zone %s, which is not a permitted training zone (%s)", [zone, concat(", ", input.training.permitted_zones)])
}

deny contains msg if {
	count(input.training.receipt_errors) == 0
	some v in input.training.residency_violations
	msg := sprintf("the training fails the model's residency class %s: %s", [input.model.residency_class, v])
}

deny contains msg if {
	input.training.source == "receipts"
	count(input.training.receipt_errors) == 0
	not input.training.job_succeeded
	msg := sprintf("training job %d did not succeed: its receipts show no attempt whose every replica succeeded", [input.training.job])
}
