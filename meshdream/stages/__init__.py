"""The four stages as plain functions; ``meshdream.coarse`` etc. re-export them."""
