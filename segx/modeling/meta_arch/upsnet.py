"""UPSNet (Xiong et al. 2019)."""
