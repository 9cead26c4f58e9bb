"""Sites declared by labels of app containers: pure rules (rules.py) and the engine side (apply.py)."""
