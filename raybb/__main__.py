from raybb.cli import app

app()
