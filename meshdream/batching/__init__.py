"""`meshdream batch`: the Ray runner, the prompts file and the gallery."""
