"""Training's tests: train and retrain, experiments, reports, statistics, synthetic photos, flowers."""
