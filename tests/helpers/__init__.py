"""What several test modules share and is not a fixture: one module per concept (test modules never
import each other; process harness code used by tools too lives in src/housing_api_testing/)."""
