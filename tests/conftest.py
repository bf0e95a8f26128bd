"""Put the repo root on sys.path so tests can `import data_loader` (and the trainers) from any cwd."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
