//! The admin node driven input by input: bootstrap, relay, local answers, monitoring.
