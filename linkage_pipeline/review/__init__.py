"""Link review: the queue of links most worth a human look, verdicts as data, and what a verdict changes."""
