"""Pure metric functions: accuracy, paired statistics, corruption errors, representation collapse."""
