"""The staffing planner: arrivals, handling and patience from the store; seats per half hour by Erlang C and A."""
