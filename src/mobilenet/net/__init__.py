"""The network as the paper gives it: Table 1 and MobileNetConfig (config), the model built from
that table (model, depthwise), what it costs (cost), and where it looks (activation_maps)."""
