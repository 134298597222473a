"""What the tests share: the broker helper, waiting with a deadline, the deploy files' readers."""
